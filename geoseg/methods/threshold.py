"""Index thresholding: the classic baseline (ExG + Otsu, NDVI > 0.3, NDWI water masks).

A per-pixel index (a named index, a band, or a small band expression parsed with ``ast`` and
never ``eval``'d) is cut at fixed thresholds or at (multi-)Otsu thresholds found on a histogram
of the global stratified sample, so the thresholds, and hence the labels, do not depend on the
chunking. Optional median or Gaussian smoothing of the index is computed over a halo wide
enough that every chunk sees the same neighbourhood as the whole raster would.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.errors import InputError
from geoseg.geo import HaloWindow, trim_halo
from geoseg.io.bandroles import BandInfo, find_role
from geoseg.io.bandroles import find_band as band_position
from geoseg.legend import NODATA_LABEL, PALETTE, ClassInfo
from geoseg.methods.features import INDICES, as_bands

#: A compiled expression: ("band", i) | ("const", x) | ("neg", e) | (op, left, right).
Expr = tuple[Any, ...]

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
#: Longest expression accepted (characters): formulas of a few bands are far shorter.
MAX_EXPRESSION = 200
#: Gaussian kernels reach ``truncate × sigma`` pixels (scipy's default); the halo follows.
GAUSS_TRUNCATE = 4.0


def compile_expression(text: str, bands: Sequence[BandInfo] | Sequence[str]) -> Expr:
    """Parse ``text`` (numbers, bands, ``+ - * /``, parentheses, unary minus) into a tree.

    A band is a role (``nir``, ``red``), a band name (``B08``) or ``layer.band`` (``t1.nir``, ``red.b1``:
    a band or role within one layer; :func:`geoseg.io.bandroles.find_band`). Anything else (calls,
    powers, comparisons) is an ``InputError``; nothing is evaluated.

    >>> compile_expression("(nir - red) / (nir + red)", ["red", "green", "blue", "nir"])
    ('/', ('-', ('band', 3), ('band', 0)), ('+', ('band', 3), ('band', 0)))
    """
    if len(text) > MAX_EXPRESSION:
        raise InputError(f"band expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise InputError(f"band expression {text!r} is not valid: {exc.msg}") from None

    info = as_bands(bands)

    def walk(node: ast.AST) -> Expr:
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return (_BINOPS[type(node.op)], walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = walk(node.operand)
            return ("neg", inner) if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ("const", float(node.value))
        if isinstance(node, ast.Name):
            return ("band", band_position(info, node.id))
        dotted = _dotted(node) if isinstance(node, ast.Attribute) else None
        if dotted:
            return ("band", band_position(info, dotted))
        raise InputError(
            f"band expression {text!r}: {type(node).__name__} is not allowed; use numbers, band names, "
            "+ - * / and parentheses"
        )

    return walk(tree.body)


def _dotted(node: ast.AST) -> str | None:
    """``layer.band`` of an attribute chain of names (``a.b.c`` → ``"a.b.c"``), else ``None``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def evaluate_expression(expr: Expr, data: np.ndarray) -> np.ndarray:
    """The expression over bands ``data`` ``(bands, h, w)``, in float32."""
    kind = expr[0]
    if kind == "band":
        return data[expr[1]].astype(np.float32)
    if kind == "const":
        return np.float32(expr[1])  # type: ignore[return-value]
    if kind == "neg":
        return -evaluate_expression(expr[1], data)
    return _APPLY[kind](evaluate_expression(expr[1], data), evaluate_expression(expr[2], data))


@dataclass(frozen=True)
class ThresholdIndex:
    """An index bound to a scene's bands; ``compute`` has the feature interface the sampler uses."""

    text: str
    expr: Expr | None  # None for a named index (ndvi, ndwi, exg)
    role_idx: tuple[tuple[str, int], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.text,)

    @property
    def n_features(self) -> int:
        return 1

    def compute(self, data: np.ndarray) -> np.ndarray:
        """The index ``(1, h, w)`` float32; non-finite values (0/0) are NaN."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if self.expr is None:
                roles = {r: data[i].astype(np.float32, copy=False) for r, i in self.role_idx}
                out = INDICES[self.text][1](roles)
            else:
                out = evaluate_expression(self.expr, data)
        out = np.broadcast_to(np.asarray(out, dtype=np.float32), data.shape[1:]).astype(np.float32)
        out[~np.isfinite(out)] = np.nan
        return out[None]


def resolve_index(text: str, bands: Sequence[BandInfo] | Sequence[str]) -> ThresholdIndex:
    """``ndvi``/``ndwi``/``exg``, a band (``nir``, ``B08``, ``t1.nir``), or a band expression."""
    key = text.strip()
    info = as_bands(bands)
    if key.lower() in INDICES:
        roles = INDICES[key.lower()][0]
        return ThresholdIndex(key.lower(), None, tuple((r, find_role(info, r)) for r in roles))
    return ThresholdIndex(key, compile_expression(key, info))


# --------------------------------------------------------------------------- Otsu on a histogram


def histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of the finite ``values`` over their range (``InputError`` when none are finite)."""
    v = values[np.isfinite(values)].astype(np.float64)
    if v.size == 0:
        raise InputError("the index has no finite value on the sampled pixels; nothing to threshold")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1.0
    return np.histogram(v, bins=bins, range=(lo, hi))


def multi_otsu_bins(counts: np.ndarray, n_classes: int) -> tuple[int, ...]:
    """Bin positions ``k`` (class boundaries lie between bin ``k-1`` and ``k``) maximising the between-class variance.

    Dynamic programming over bins: with ``W``/``S`` the counts and value sums of a run of bins,
    the between-class variance is, up to constants, ``Σ S²/W`` over classes. Ties go to the lowest
    boundaries. ``n_classes = 2`` is Otsu's method.

    >>> multi_otsu_bins(np.array([5, 5, 0, 0, 5, 5]), 2)
    (2,)
    """
    n = len(counts)
    if not 2 <= n_classes <= n:
        raise InputError(f"multi-Otsu needs 2 to {n} classes, got {n_classes}")
    w = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    s = np.concatenate([[0.0], np.cumsum(counts * (np.arange(n) + 0.5), dtype=np.float64)])

    def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # classes made of bins a..b-1
        ww = w[b] - w[a]
        ss = s[b] - s[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ww > 0, ss * ss / np.where(ww > 0, ww, 1.0), 0.0)

    # best[j][e]: best score of j+1 classes over bins 0..e-1; arg[j][e]: start of the last class
    ends = np.arange(n + 1)
    best = score(np.zeros(n + 1, int), ends)
    best[0] = -np.inf
    args = []
    for _ in range(1, n_classes):
        new = np.full(n + 1, -np.inf)
        arg = np.zeros(n + 1, int)
        for e in range(2, n + 1):
            starts = np.arange(1, e)
            cand = best[starts] + score(starts, np.full(starts.shape, e))
            k = int(np.argmax(cand))  # the first maximum: lowest boundary on ties
            new[e], arg[e] = cand[k], starts[k]
        best = new
        args.append(arg)
    cuts = []
    e = n
    for arg in reversed(args):
        e = int(arg[e])
        cuts.append(e)
    return tuple(sorted(cuts))


def otsu_thresholds(values: np.ndarray, n_classes: int = 2, bins: int = 256) -> tuple[float, ...]:
    """(Multi-)Otsu thresholds of ``values``: bin edges; a pixel is above a threshold when ``> t``."""
    counts, edges = histogram(values, bins)
    return tuple(float(edges[k]) for k in multi_otsu_bins(counts, n_classes))


# --------------------------------------------------------------------------- the fitted model


@dataclass(frozen=True)
class ThresholdModel:
    """Thresholds (ascending), the smoothing, and the value filled in for nodata before smoothing."""

    index: str
    thresholds: tuple[float, ...]
    smoothing: str = "none"  # none | median | gaussian
    size: int = 3
    sigma: float = 1.0
    fill: float = 0.0

    @property
    def halo(self) -> int:
        if self.smoothing == "median":
            return self.size // 2
        if self.smoothing == "gaussian":
            return int(GAUSS_TRUNCATE * self.sigma + 0.5)
        return 0

    def classify(self, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class positions 0..len(thresholds) (``> t`` moves up), ``NODATA_LABEL`` where invalid or NaN."""
        ok = valid & np.isfinite(index)
        pos = np.searchsorted(np.asarray(self.thresholds, dtype=np.float32), index, side="left")
        out = pos.astype(np.uint8)
        out[~ok] = NODATA_LABEL
        return out

    def smooth(self, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The smoothed index; nodata and NaN are filled with ``fill`` first (same value in every chunk)."""
        if self.smoothing == "none":
            return index
        from scipy import ndimage

        x = np.where(valid & np.isfinite(index), index, np.float32(self.fill)).astype(np.float32)
        if self.smoothing == "median":
            return ndimage.median_filter(x, size=self.size, mode="reflect")
        return ndimage.gaussian_filter(x, sigma=self.sigma, mode="reflect", truncate=GAUSS_TRUNCATE)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "threshold", "index": self.index, "thresholds": list(self.thresholds),
                "smoothing": self.smoothing, "size": self.size, "sigma": self.sigma, "fill": self.fill}


def fit_threshold(
    index: str, n_classes: int, fixed: Sequence[float] | None, sample: np.ndarray | None, bins: int = 256,
    smoothing: str = "none", size: int = 3, sigma: float = 1.0,
) -> ThresholdModel:
    """Fixed thresholds as given, or (multi-)Otsu on the sample's histogram; ``fill`` = sample median."""
    values = None if sample is None else np.asarray(sample, dtype=np.float64).ravel()
    if fixed is not None:
        thresholds = tuple(sorted(float(t) for t in fixed))
    else:
        if values is None:
            raise InputError("Otsu thresholds need a pixel sample")
        thresholds = otsu_thresholds(values, n_classes, bins)
    finite = values[np.isfinite(values)] if values is not None else np.empty(0)
    fill = float(np.median(finite)) if finite.size else float(thresholds[0])
    return ThresholdModel(index, thresholds, smoothing, size, sigma, fill)


def threshold_legend(n_classes: int, classes: Sequence[Any] | None = None) -> tuple[ClassInfo, ...]:
    """The job's classes (lowest index first) or ``below``/``above`` (``level_k`` for more classes)."""
    if classes:
        if len(classes) != n_classes:
            raise InputError(f"the threshold gives {n_classes} classes but {len(classes)} are named in method.classes")
        return tuple(ClassInfo(int(c.id), str(c.name), c.color or PALETTE[k % len(PALETTE)]) for k, c in enumerate(classes))
    names = ["below", "above"] if n_classes == 2 else [f"level_{k}" for k in range(n_classes)]
    return tuple(ClassInfo(k, names[k], PALETTE[k % len(PALETTE)]) for k in range(n_classes))


@dataclass(frozen=True)
class ThresholdPredictor:
    """Index → optional smoothing over a halo → thresholds → the job's class ids."""

    model: ThresholdModel
    index: ThresholdIndex
    classes: tuple[ClassInfo, ...]
    resources: dict[str, float] | None = None

    @property
    def halo(self) -> int:
        return self.model.halo

    def legend(self) -> tuple[ClassInfo, ...]:
        return self.classes

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        if self.model.smoothing == "none":  # per pixel: compute on the core only
            data, valid = trim_halo(data, hw), trim_halo(valid, hw)
            pos = self.model.classify(self.index.compute(data)[0], valid)
        else:
            idx = self.model.smooth(self.index.compute(data)[0], valid)
            pos = self.model.classify(trim_halo(idx, hw), trim_halo(valid, hw))
        lut = np.full(256, NODATA_LABEL, dtype=np.uint8)
        lut[: len(self.classes)] = [c.id for c in self.classes]
        return lut[pos]


def fit_threshold_job(client, scene, cfg, show_progress: bool = True):
    """Resolve the index, draw the global sample when Otsu needs it, fit; ``(predictor, model.json dict)``."""
    from geoseg.methods.sampling import SAMPLE_CHUNK  # the Otsu thresholds do not depend on chunk_size
    from geoseg.run.labelling import draw_sample

    index = resolve_index(cfg.index, scene.bands or scene.band_names)
    n_classes = cfg.classes_out
    classes = threshold_legend(n_classes, cfg.classes)
    sm = cfg.smoothing
    sample = None
    if cfg.fixed is None or sm is not None:
        sample = draw_sample(client, scene, scene.chunk_grid(SAMPLE_CHUNK), index, cfg.sample_size, cfg.seed,
                             show_progress)
    model = fit_threshold(
        index.text, n_classes, cfg.fixed, sample, cfg.bins,
        smoothing=sm.kind if sm else "none", size=sm.size if sm else 3, sigma=sm.sigma if sm else 1.0,
    )
    return ThresholdPredictor(model, index, classes), model.to_json()
