"""K-means on a pixel sample: greedy k-means++ seeding, Lloyd's iterations, the best of several seeds.

Why not scikit-learn's ``KMeans``: the fit is a fraction of a second on the default sample, but
importing ``sklearn.cluster`` costs each fitting worker process about 1 CPU second (1,300 modules:
scipy.stats, pandas, pyarrow) on the critical path of every run, before any chunk can be labelled.
This module follows ``KMeans(algorithm="lloyd")`` step for step (the same random draws from
``numpy.random.RandomState(seed)``, the same distance expressions, empty-cluster relocation, stopping
rule and choice among seeds), so a seed gives scikit-learn's centroids; the tests fit both on the
same samples and compare.

Sums are taken over fixed blocks of pixels and added in block order, so the result does not depend
on how many threads ran the blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

#: Pixels per partial sum of a Lloyd step.
BLOCK = 16_384

#: Relative tolerance on the squared centroid shift (scikit-learn's default ``tol``).
TOLERANCE = 1e-4


@dataclass(frozen=True)
class KMeansFit:
    """Centroids ``(k, f)``, each sample pixel's cluster, the inertia and Lloyd steps taken (best seed)."""

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int


def kmeans(
    x: np.ndarray, n_clusters: int, seed: int, n_init: int = 4, max_iter: int = 300, threads: int = 1
) -> KMeansFit:
    """Fit ``n_clusters`` centroids to ``x`` ``(n, f)``: ``n_init`` k-means++ seeds, Lloyd's iterations
    from each, the lowest inertia kept (a later seed only when it is a different clustering)."""
    x = np.array(x, dtype=np.float64, order="C")
    tol = float(np.mean(np.var(x, axis=0)) * TOLERANCE)
    offset = x.mean(axis=0)
    x -= offset  # centred, as scikit-learn does: smaller sums, the same centroids
    norms = np.einsum("ij,ij->i", x, x)
    rng = np.random.RandomState(seed)
    best: KMeansFit | None = None
    with _runner(threads) as run:
        for _ in range(n_init):
            fit = lloyd(x, kmeans_plusplus(x, n_clusters, rng, norms), max_iter, tol, run)
            if best is None or (fit.inertia < best.inertia and not same_clustering(fit.labels, best.labels)):
                best = fit
    assert best is not None
    return KMeansFit(best.centers + offset, best.labels, best.inertia, best.n_iter)


def kmeans_plusplus(x: np.ndarray, n_clusters: int, rng: np.random.RandomState, norms: np.ndarray) -> np.ndarray:
    """Greedy k-means++ seeds (Arthur & Vassilvitskii): each next seed the best of ``2 + ln k``
    candidates drawn with probability proportional to the squared distance to the seeds so far."""
    n = x.shape[0]
    trials = 2 + int(np.log(n_clusters))
    weights = np.ones(n)  # unit weights, kept in scikit-learn's expressions so its draws are met bit for bit
    centers = np.empty((n_clusters, x.shape[1]))
    first = rng.choice(n, p=weights / weights.sum())
    centers[0] = x[first]
    closest = squared_distances(x[[first]], x, norms)
    potential = closest @ weights
    for c in range(1, n_clusters):
        draws = rng.uniform(size=trials) * potential
        candidates = np.searchsorted(np.cumsum(weights * closest), draws)
        np.clip(candidates, None, n - 1, out=candidates)  # rounding can put a draw past the last sum
        dist = squared_distances(x[candidates], x, norms)
        np.minimum(closest, dist, out=dist)
        potentials = dist @ weights.reshape(-1, 1)
        pick = int(np.argmin(potentials))
        potential = potentials[pick]
        closest = dist[pick]
        centers[c] = x[candidates[pick]]
    return centers


def squared_distances(a: np.ndarray, x: np.ndarray, x_norms: np.ndarray) -> np.ndarray:
    """``(len(a), n)`` squared distances ``|a|² - 2 a·x + |x|²``, clipped at 0 (rounding)."""
    d = -2 * (a @ x.T)
    d += np.einsum("ij,ij->i", a, a)[:, None]
    d += x_norms[None, :]
    np.maximum(d, 0, out=d)
    return d


def lloyd(x: np.ndarray, centers: np.ndarray, max_iter: int, tol: float, run: Runner) -> KMeansFit:
    """Lloyd's iterations on the pixels ``x`` ``(n, f)`` from ``centers`` until the labels stop changing,
    the squared centroid shift is within ``tol``, or ``max_iter`` steps."""
    from geoseg._kernels.lloyd_loops import inertia

    labels = np.full(x.shape[0], -1, dtype=np.int32)
    previous = labels.copy()
    settled = False
    steps = 0
    for steps in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        new = lloyd_step(x, centers, labels, run)
        shift = np.sqrt(((new - centers) ** 2).sum(axis=1))
        centers = new
        if np.array_equal(labels, previous):
            settled = True
            break
        if (shift**2).sum() <= tol:
            break
        previous[:] = labels
    if not settled:  # the labels of the last centroids
        lloyd_step(x, centers, labels, run)
    return KMeansFit(centers, labels, float(inertia(x, centers, labels)), steps)


def lloyd_step(x: np.ndarray, centers: np.ndarray, labels: np.ndarray, run: Runner) -> np.ndarray:
    """Assign every pixel of ``x`` ``(n, f)`` to its nearest centroid (into ``labels``) and return the
    clusters' means; an empty cluster takes the pixel farthest from its centroid, one that stays empty
    the largest one's mean."""
    from geoseg._kernels.lloyd_loops import lloyd_blocks

    k, f = centers.shape
    n_blocks = -(-x.shape[0] // BLOCK)
    sums = np.empty((n_blocks, k, f))
    counts = np.empty((n_blocks, k))
    run.map(lloyd_blocks, [(x, centers, labels, sums, counts, b0, b1, BLOCK) for b0, b1 in run.shares(n_blocks)])
    total, weight = sums.sum(axis=0), counts.sum(axis=0)
    _relocate_empty(x, centers, labels, total, weight)
    for j in range(k):
        if weight[j] > 0:
            total[j] *= 1.0 / weight[j]
        else:
            total[j] = total[int(np.argmax(weight))]
    return total


def _relocate_empty(x: np.ndarray, centers: np.ndarray, labels: np.ndarray, sums: np.ndarray, weight: np.ndarray) -> None:
    """Give each empty cluster one of the pixels farthest from their centroids (taken out of its cluster)."""
    empty = np.flatnonzero(weight == 0)
    if empty.size == 0:
        return
    dist = ((x - centers[labels]) ** 2).sum(axis=1)
    if dist.max() == 0:  # fewer distinct pixels than clusters: nothing to move
        return
    far = np.argpartition(dist, -empty.size)[: -empty.size - 1 : -1]
    for cluster, pixel in zip(empty, far):
        old = labels[pixel]
        sums[old] -= x[pixel]
        sums[cluster] = x[pixel]
        weight[cluster] = 1.0
        weight[old] -= 1.0


def same_clustering(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the labels ``b`` are a function of the labels ``a`` (the same partition, renamed)."""
    k = int(max(a.max(), b.max())) + 1
    pairs = np.bincount(a.astype(np.int64) * k + b, minlength=k * k).reshape(k, k)
    return bool(((pairs > 0).sum(axis=1) <= 1).all())


class Runner:
    """Runs a compiled loop (which releases the GIL) over shares of the blocks, on ``threads`` threads."""

    def __init__(self, threads: int = 1, pool: ThreadPoolExecutor | None = None) -> None:
        self.threads = threads if pool is not None else 1
        self.pool = pool

    def shares(self, n_blocks: int) -> list[tuple[int, int]]:
        """``n_blocks`` cut into one run of consecutive blocks per thread: one call per thread and step."""
        edges = np.linspace(0, n_blocks, min(self.threads, n_blocks) + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def map(self, fn: Callable[..., object], calls: list[tuple]) -> None:
        """``fn(*args)`` for each argument tuple (each call writes its own blocks)."""
        if self.pool is None or len(calls) == 1:
            for args in calls:
                fn(*args)
            return
        for done in [self.pool.submit(fn, *args) for args in calls]:
            done.result()


@contextmanager
def _runner(threads: int) -> Iterator[Runner]:
    """A :class:`Runner` on ``threads`` threads, its pool shut down afterwards."""
    if threads <= 1:
        yield Runner()
        return
    with ThreadPoolExecutor(threads) as pool:
        yield Runner(threads, pool)
