"""The compiled counting loops against a brute-force count, on blocky and noisy rasters."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg._kernels.pixelcount import dense_histogram, value_ranges


def blocky_bytes(rng: np.random.Generator, n: int, run: int, values: np.ndarray, noise: float) -> np.ndarray:
    """Runs of ``run`` equal values (so whole 8-byte words are often uniform), some pixels flipped."""
    a = np.repeat(rng.choice(values, -(-n // run)), run)[:n].astype(np.uint8)
    flip = rng.random(n) < noise
    a[flip] = rng.choice(values, int(flip.sum()))
    return a


def brute_force(slots: np.ndarray, ref: np.ndarray, invalid: int | None, labels: np.ndarray) -> np.ndarray:
    r = value_ranges(slots, ref, invalid, labels)
    n_ref = r.ref_hi - r.ref_lo + 1
    out = np.zeros((r.reg_hi - r.reg_lo + 1, n_ref + 1, r.lab_hi - r.lab_lo + 1), np.int64)
    j = ref.astype(np.int64) - r.ref_lo
    if invalid is not None:
        j[ref == invalid] = n_ref
    np.add.at(out, (slots.astype(np.int64) - r.reg_lo, j, labels.astype(np.int64) - r.lab_lo), 1)
    return out


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(1, 3000),
    run=st.sampled_from([1, 3, 8, 16, 64, 5000]),
    noise=st.sampled_from([0.0, 0.01, 0.3]),
    invalid=st.sampled_from([None, 0, 5, 255]),
    offset=st.sampled_from([0, 1, 3]),  # 1, 3: arrays not on an 8-byte boundary (the per-pixel loop)
    seed=st.integers(0, 2**32 - 1),
    wide_slots=st.booleans(),  # uint16 region codes: the per-pixel loop
)
def test_histogram_equals_brute_force(n: int, run: int, noise: float, invalid: int | None, offset: int, seed: int,
                                      wide_slots: bool) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    slots = blocky_bytes(rng, n + offset, run * 4, np.array([0, 1, 2, 7]), noise / 3)[offset:]
    ref = blocky_bytes(rng, n + offset, run, np.array([0, 1, 5, 6, 255]), noise)[offset:]
    labels = blocky_bytes(rng, n + offset, run, np.array([1, 2, 3, 255]), noise)[offset:]
    if wide_slots:
        slots = slots.astype(np.uint16) + 250  # past a byte, in a small range (as count_pixels ensures)
    got = dense_histogram(slots, ref, invalid, labels, value_ranges(slots, ref, invalid, labels))
    np.testing.assert_array_equal(got, brute_force(slots, ref, invalid, labels))
    assert got.sum() == n


def test_value_ranges_leave_out_invalid_reference_pixels() -> None:
    ref = np.array([9, 0, 3, 0, 200], np.uint8)
    other = np.array([4, 2, 2, 3, 2], np.uint8)
    r = value_ranges(other, ref, 0, other)
    assert (r.reg_lo, r.reg_hi, r.ref_lo, r.ref_hi, r.lab_lo, r.lab_hi) == (2, 4, 3, 200, 2, 4)
    r = value_ranges(other, np.zeros(5, np.uint8), 0, other)
    assert r.ref_lo > r.ref_hi  # no valid reference pixel


def test_loops_compile_where_nothing_can_be_cached() -> None:
    """A function without a source file has no cache folder (as on a read-only install without
    a home): it is compiled in memory instead of failing."""
    from geoseg._kernels.compiled import compiled

    namespace: dict = {}
    exec("def add(a, b):\n    return a + b\n", namespace)
    assert compiled(namespace["add"])(2, 3) == 5

