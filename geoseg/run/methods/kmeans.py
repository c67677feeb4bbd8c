"""K-means as a method of the run: fitted on the stratified pixel sample, on a worker, then a per-pixel map.

The sample is drawn chunk by chunk of the fixed sampling grid on the workers and sent worker to worker to
the one task that fits (:func:`fit_task`, :mod:`geoseg.methods.kmeans_fit`); only the model, a few
numbers, reaches the client. The labels are cluster ids, so the evaluation maps them to reference
classes (Hungarian) unless the job says otherwise.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from geoseg.errors import InputError
from geoseg.geo import Window, halo_window
from geoseg.methods.features import FeatureSpec, ResolvedFeatures
from geoseg.methods.kmeans import KMeansModel, fit_kmeans
from geoseg.methods.predictors import KMeansPredictor
from geoseg.run.cluster import describe
from geoseg.run.methodspec import FitContext, MethodSpec, Prepared
from geoseg.run.schema import MAX_SEED, StrictModel

if TYPE_CHECKING:
    from geoseg.io.scene import Scene

log = logging.getLogger(__name__)


class FeaturesConfig(StrictModel):
    """Bands (by name; all when omitted) and spectral indices used as k-means features."""

    bands: list[str] | None = None
    indices: list[Literal["ndvi", "ndwi", "exg"]] = Field(default_factory=list)


class KMeansConfig(StrictModel):
    kind: Literal["kmeans"] = "kmeans"
    n_clusters: int = Field(6, ge=2, le=250)
    sample_size: int = Field(200_000, ge=1_000, le=50_000_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    n_init: int = Field(4, ge=1, le=50)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    #: ``model.json`` of an earlier run: skip the fit and reuse its clusters (comparable ids over time).
    model: Path | None = None


def prepare(ctx: FitContext) -> Prepared:
    """Fit (or reuse ``model``) and return the predictor; the resume key takes the centroids and the
    standardisation, not the inertia (a diagnostic whose last digits vary with the order of the fit's
    threaded sums)."""
    drawn: dict[str, int] = {}
    model, feats = fit_kmeans_on_cluster(ctx.client, ctx.scene, ctx.config, ctx.show_progress, drawn)
    model_json = model.to_json()
    resume = json.dumps({k: v for k, v in model_json.items() if k != "inertia"})
    record = {"kmeans_sample": drawn} if drawn else {}  # the sample actually drawn vs asked, in run.json
    return Prepared(KMeansPredictor(model, feats), resume, model_json, record)


def check(cfg: KMeansConfig, scene: Scene) -> None:
    """The features' bands found by role or name on the client: a band that cannot be told apart is an
    error before the cluster starts."""
    kmeans_features(cfg, scene)


METHOD = MethodSpec("kmeans", KMeansConfig, fit="sample", prepare=prepare, check=check, mapping="hungarian")


#: Below this fraction of the asked k-means sample a warning says how many pixels were drawn.
SAMPLE_SHORT_WARNING = 0.5


def sample_shortfall(drawn: int, asked: int, total_px: int) -> str | None:
    """The warning for a k-means sample well short of the one asked, or ``None`` when it is not.

    Every valid pixel is drawn at the rate ``asked / total_px``, so a scene 17 % nodata draws 83 %
    of the sample asked: nothing to warn about while there are valid pixels enough. The warning
    comes when under half the sample was drawn, and says what is true: the valid share of the
    scene it implies, and whether the scene has fewer valid pixels than the sample asked.

    >>> sample_shortfall(41741, 50000, 3_800_000) is None
    True
    >>> print(sample_shortfall(6700, 20000, 40000))  # doctest: +NORMALIZE_WHITESPACE
    k-means sample: 6700 of the 20000 pixels asked were drawn: about 34 % of the scene is valid
    (nodata, NaN or masks cover the rest), about 13,400 pixels, fewer than the sample asked
    """
    if asked <= 0 or drawn >= SAMPLE_SHORT_WARNING * asked:
        return None
    valid_share = drawn / asked  # drawn ≈ valid × asked / total
    valid = round(valid_share * total_px, -2)
    few = ", fewer than the sample asked" if valid < asked else ""
    return (
        f"k-means sample: {drawn} of the {asked} pixels asked were drawn: about {100 * valid_share:.0f} % of the scene "
        f"is valid (nodata, NaN or masks cover the rest), about {valid:,.0f} pixels{few}"
    )


def kmeans_features(cfg: KMeansConfig, scene: Scene) -> ResolvedFeatures:
    """The k-means job's features bound to the scene's bands (by role: :mod:`geoseg.io.bandroles`); run on
    the client before the cluster starts, so a band that cannot be found is refused at once."""
    return FeatureSpec(
        bands=tuple(cfg.features.bands) if cfg.features.bands else None, indices=tuple(cfg.features.indices)
    ).resolve(scene.bands or scene.band_names)




def fit_kmeans_on_cluster(
    client, scene: Scene, cfg: KMeansConfig, show_progress: bool = True,
    drawn: dict[str, int] | None = None,
) -> tuple[KMeansModel, ResolvedFeatures]:
    """Draw the stratified sample on the workers and fit k-means there too (:func:`fit_task`).

    The sample is drawn chunk by chunk of the fixed :data:`geoseg.methods.sampling.SAMPLE_CHUNK` grid,
    so the model, and the labels, do not depend on the job's ``chunk_size``.

    The sample parts go from the sampling tasks to the fit task worker to worker; the fit
    starts when the last part is drawn, and only the model (a few numbers) reaches the client.

    ``drawn`` receives ``{"drawn": n, "asked": m}``; a sample under half the asked size
    (a scene mostly nodata) is also a warning (:func:`sample_shortfall`).

    With ``cfg.model`` (a ``model.json`` of an earlier run) the fit is skipped and that model reused.
    """
    from geoseg.methods.sampling import SAMPLE_CHUNK
    from geoseg.run.labelling import sample_futures, wait_futures, warm_in_background

    feats = kmeans_features(cfg, scene)
    if cfg.model is not None:
        try:
            model = KMeansModel.from_json(json.loads(Path(cfg.model).read_text()))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read k-means model {cfg.model}: {exc}") from exc
        if model.feature_names != feats.names:
            raise InputError(
                f"k-means model {cfg.model} was fitted on features {list(model.feature_names)}, "
                f"this scene gives {list(feats.names)}"
            )
        return model, feats
    workers = describe(client, "given").workers
    fit_worker = fit_worker_of(workers)
    warm = partial(warm_kmeans, feats, cfg.n_clusters, scene.count)
    if fit_worker is not None:  # ~0.5 s of loading there while the sample is drawn
        client.run(warm_in_background, (), warm, workers=[fit_worker], on_error="ignore")
    grid = scene.chunk_grid(SAMPLE_CHUNK)
    futures = sample_futures(client, scene, grid, feats, cfg.sample_size, cfg.seed)
    placement = {"workers": [fit_worker], "allow_other_workers": True} if fit_worker is not None else {}
    fit = client.submit(fit_task, futures, cfg.n_clusters, cfg.seed, feats.names, cfg.n_init, pure=False,
                        **placement)
    wait_futures(futures, "sampling", show_progress)
    others = [w for w in workers if w != fit_worker]
    if others:  # they wait for the fit now that their sample parts are drawn: load the label loops meanwhile
        client.run(warm_in_background, (), warm, workers=others, on_error="ignore")  # a lost worker: no reason to stop
    model, n_drawn = client.gather(fit)  # no bar: one task, a second or so
    asked = min(cfg.sample_size, grid.height * grid.width)
    message = sample_shortfall(n_drawn, asked, grid.height * grid.width)
    if message:
        log.warning("%s", message)
    elif n_drawn < asked:
        log.info("k-means sample: %d of the %d pixels asked were drawn (every valid pixel draws at the same rate)",
                 n_drawn, asked)
    if drawn is not None:
        drawn.update(drawn=int(n_drawn), asked=int(asked))
    return model, feats


def fit_worker_of(workers: dict[str, dict[str, Any]]) -> str | None:
    """The worker the k-means fit runs on: the one with the most threads (the fit may use every core of
    a large sample), then the lowest address (the same choice on every call); ``None`` without workers.

    Why choose it before sampling: that worker needs the compiled loops first, so it loads them while the
    sample is drawn; the others load them only once their sample parts are drawn, as loading on every
    worker at the start takes CPU the sampling tasks want (measured zero-sum on 2 cores).

    >>> fit_worker_of({"tcp://b:1": {"nthreads": 1}, "tcp://a:1": {"nthreads": 1}, "tcp://c:1": {"nthreads": 4}})
    'tcp://c:1'
    >>> fit_worker_of({"tcp://b:1": {"nthreads": 2}, "tcp://a:1": {"nthreads": 2}}), fit_worker_of({})
    ('tcp://a:1', None)
    """
    if not workers:
        return None
    return min(workers, key=lambda addr: (-int(workers[addr].get("nthreads") or 0), addr))




def warm_kmeans(feats: ResolvedFeatures, n_clusters: int, n_bands: int) -> None:
    """Load, in this process, what the k-means fit and a first label task would: numba's CPU target
    (which imports scipy.linalg), the fit's loops (a fit of a few points), zarr and its codecs, and the
    compiled labelling and counting loops for the types of a real chunk (``n_bands`` float32 bands,
    ``feats``, ``n_clusters`` centroids), on a 2 × 2 window.

    Measured on the 400 Mpx benchmark scene: each worker's first label task took 0.56 s against
    0.13-0.14 s for the others.
    """
    import zarr  # noqa: F401 - the label store's writer

    from geoseg._kernels.labelcount import label_counts
    from geoseg.methods.kmeans_fit import kmeans

    f = feats.n_features
    kmeans(np.arange(4 * f, dtype=np.float64).reshape(4, f), 2, seed=0, n_init=1)
    model = KMeansModel(centroids=np.zeros((n_clusters, f), np.float32), mean=np.zeros(f, np.float32),
                        std=np.ones(f, np.float32), feature_names=feats.names, inertia=0.0)
    window = Window(0, 0, 2, 2)
    labels = KMeansPredictor(model, feats).predict(
        np.ones((n_bands, 2, 2), np.float32), np.ones((2, 2), bool), halo_window(window, 0, (2, 2)))
    label_counts(labels)


def fit_task(
    parts: list[np.ndarray], n_clusters: int, seed: int, names: tuple[str, ...], n_init: int
) -> tuple[KMeansModel, int]:
    """Fit k-means on the gathered sample, on a worker (the same model as on the client); returns
    the model and the number of pixels it was fitted on.

    The other workers wait for the fit, so a large sample may use every core of its machine, not
    only the worker's threads (:func:`fit_threads`).
    """
    sample = np.concatenate(parts, axis=0)
    if sample.shape[0] == 0:
        raise InputError("the input has no valid pixels (all nodata or NaN); nothing to cluster")
    log.info("k-means sample: %d pixels x %d features", *sample.shape)
    model = fit_kmeans(sample, n_clusters, seed, names, n_init=n_init, threads=fit_threads(sample.shape[0]))
    return model, int(sample.shape[0])


#: Sample size from which the k-means fit uses every core of its worker's machine (below: one thread).
PARALLEL_FIT_PIXELS = 100_000


def fit_threads(n_pixels: int) -> int:
    """Threads for fitting k-means on ``n_pixels`` sample pixels: every core of the machine (the other
    workers wait for the fit) once the sample has a few blocks of pixels to share out.

    Measured on the 2-core machine: a Lloyd step over 200,000 pixels 3.4 ms on one thread, 2.0-2.2 ms
    on two; over 1 M pixels 16 ms against 9 ms. The 400 Mpx benchmark's fit stage 1.05-1.15 s against
    1.10-1.25 s (0.65-0.70 s against 0.74-0.82 s on warm workers). The result is the same either way.
    """
    from geoseg._kernels.compiled import usable_cores

    return usable_cores() if n_pixels >= PARALLEL_FIT_PIXELS else 1
