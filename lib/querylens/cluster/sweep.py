"""The grid of n_components x n_clusters, with PCA fitted once and sliced: the notebook's
grid, or one from a handful of components to the full dimension and k scaled to the queries."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from querylens.cluster.backends import fit_kmeans_sklearn
from querylens.cluster.evaluate import EXTERNAL_METRICS, external_scores
from querylens.cluster.model import Projection
from querylens.cluster.silhouette import (
    ClusterStats,
    prefix_silhouettes_euclidean,
    sample_rows,
    silhouette_sqeuclidean,
)

log = logging.getLogger("querylens")

SWEEP_COLUMNS = ["n_components", "n_clusters", "n_rows", "silhouette_euclidean_sampled",
                 "silhouette_sqeuclidean", "inertia", "explained_variance", "ami", "nmi", "ari",
                 "purity", "inverse_purity", "labelled_rows", "stability_ari", "chosen"]
AUTO_COMPONENTS = (10, 40, 160, 640)


def components_grid(configured: str | list[int], max_components: int,
                    extra: int | str = "auto") -> list[int]:
    """`cluster.sweep_components`, or for `auto` 10, 40, 160, 640 below `max_components`
    and `max_components` itself (all components: no reduction); plus `extra` when a number
    (the chosen or configured n_components)."""
    grid = ([p for p in AUTO_COMPONENTS if p < max_components] + [max_components]
            if configured == "auto" else list(configured))
    return sorted({*grid, *([extra] if isinstance(extra, int) else [])})


def clusters_grid(configured: str | list[int], n_rows: int, low: int, high: int, points: int
                  ) -> list[int]:
    """`cluster.sweep_clusters`, or for `auto` `points` values spaced geometrically from
    max(`low`, top / 8) to top = min(`high`, 2 sqrt(`n_rows`))."""
    if configured == "auto":
        top = max(2, min(high, int(round(2 * np.sqrt(n_rows)))))
        bottom = min(top, max(low, int(round(top / 8))))
        grid = np.unique(np.round(np.geomspace(bottom, top, points)).astype(int)).tolist()
    else:
        grid = list(configured)
    return sorted(set(grid))


def valid_grid(
    components: list[int], clusters: list[int], dim: int, n_rows: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Grid points that can be fitted (p <= dim and p <= rows, 2 <= k < rows), and the rest."""
    points = [(p, k) for k in sorted(set(clusters)) for p in sorted(set(components))]
    good = [(p, k) for p, k in points if p <= min(dim, n_rows) and 2 <= k < n_rows]
    bad = [pt for pt in points if pt not in good]
    if not good:
        raise ValueError(
            f"no valid point in the sweep grid cluster.sweep_components={sorted(set(components))}"
            f" x cluster.sweep_clusters={sorted(set(clusters))} for {n_rows} queries of "
            f"dimension {dim} (need n_components <= {min(dim, n_rows)} and "
            f"2 <= n_clusters < {n_rows})"
        )
    return good, bad


def warm_start(
    Z: np.ndarray, labels: np.ndarray, k: int, max_iter: int, tol: float, seed: int
) -> KMeans:
    """KMeans started from the means, in this grid point's space, of the previous point's
    clusters (PCA is nested, so the previous solution is a good start)."""
    centers = np.vstack([Z[labels == c].mean(0) if (labels == c).any() else Z[c] for c in
                         range(k)])
    return KMeans(n_clusters=k, init=centers, n_init=1, max_iter=max_iter, tol=tol,
                  random_state=seed).fit(Z)


def inits_at(n_init: int, p: int, max_p: int, full_n_init: int, full_max_p: int) -> int:
    """k-means++ restarts at n_components `p`: the notebook's `full_n_init` where that is
    cheap (p <= full_max_p), `n_init` up to max_p / 4 components, one above (warm starts
    from the neighbouring points do the rest there)."""
    if p <= full_max_p:
        return full_n_init
    return n_init if 4 * p <= max_p else 1


def better(
    km: KMeans, Z_all: np.ndarray, p: int, k: int, fits: dict[tuple[int, int], KMeans],
    order: list[tuple[int, int]], max_iter: int, tol: float, seed: int,
) -> KMeans:
    """`km` or a warm start from the neighbouring fitted point of the same k in `order`,
    whichever has the lower inertia."""
    i = order.index((p, k))
    before = [pt for pt in order[:i] if pt[1] == k and pt in fits]
    if not before:
        return km
    Z = np.ascontiguousarray(Z_all[:, :p])
    warm = warm_start(Z, fits[before[-1]].labels_, k, max_iter, tol, seed)
    return warm if warm.inertia_ < km.inertia_ else km


def pca_variance(projection: Projection) -> pd.DataFrame:
    """One row per component: explained_variance_ratio and cumulative."""
    ratio = projection.explained_variance_ratio_
    return pd.DataFrame({"component": np.arange(1, len(ratio) + 1, dtype=np.int32),
                         "explained_variance_ratio": ratio,
                         "cumulative": np.cumsum(ratio)})


def fit_grid(
    Z_all: np.ndarray, good: list[tuple[int, int]], *, n_init: int, max_iter: int, tol: float,
    seed: int, full_n_init: int, full_n_init_components: int,
) -> dict[tuple[int, int], KMeans]:
    """KMeans at each grid point (p, k) on `Z_all[:, :p]`, as described in `run_sweep`."""
    max_p = max(p for p, _ in good)
    fits: dict[tuple[int, int], KMeans] = {}
    for p, k in good:
        km = fit_kmeans_sklearn(np.ascontiguousarray(Z_all[:, :p]), k,
                                inits_at(n_init, p, max_p, full_n_init, full_n_init_components),
                                max_iter, tol, seed)
        if p > full_n_init_components:
            km = better(km, Z_all, p, k, fits, good, max_iter, tol, seed)
        fits[p, k] = km
    for p, k in good[::-1]:
        if p > full_n_init_components:
            fits[p, k] = better(fits[p, k], Z_all, p, k, fits, good[::-1], max_iter, tol, seed)
    return fits


def seed_stability(
    Z_all: np.ndarray, fits: dict[tuple[int, int], KMeans], good: list[tuple[int, int]],
    size: int, *, n_init: int, max_iter: int, tol: float, seed: int, full_n_init: int,
    full_n_init_components: int,
) -> dict[tuple[int, int], float]:
    """Per grid point: ARI between its fit and a refit with seed + 1 (as many restarts) on the
    first `size` rows, over those rows."""
    m = min(size, len(Z_all))
    max_p = max(p for p, _ in good)
    out = {}
    for p, k in good:
        if k >= m:
            out[p, k] = float("nan")
            continue
        refit = fit_kmeans_sklearn(np.ascontiguousarray(Z_all[:m, :p]), k,
                                   inits_at(n_init, p, max_p, full_n_init, full_n_init_components),
                                   max_iter, tol, seed + 1)
        out[p, k] = float(adjusted_rand_score(fits[p, k].labels_[:m], refit.labels_))
    return out


def run_sweep(
    X: np.ndarray, projection: Projection, components: list[int], clusters: list[int], *,
    n_init: int, max_iter: int, tol: float, seed: int, silhouette_sample_size: int,
    full_n_init: int = 50, full_n_init_components: int = 10, kmeans_threads: int | None = 1,
    classes: np.ndarray | None = None, stability_sample_size: int = 2000,
) -> pd.DataFrame:
    """Fit KMeans at each valid grid point on the driver rows `X`; one row per point.

    Points with at most `full_n_init_components` components run the notebook's KMeans
    (`full_n_init` k-means++ restarts) and keep it. The others take the lowest inertia of
    their restarts (see `inits_at`) and warm starts from the same k's neighbouring points,
    up and then down the components. The Euclidean silhouette of every point is exact on one
    seeded sample of `silhouette_sample_size` rows (`prefix_silhouettes_euclidean`).
    The fits run with `kmeans_threads` OpenMP/BLAS threads (None: the library default); one
    thread is much faster for these small fits, above all on a busy machine.
    `stability_ari` is `seed_stability` on the first `stability_sample_size` rows (0: none);
    `chosen` is false here (`select.mark_chosen` sets it).
    With `classes` (one per row of `X`, None where unknown) each point also gets its
    `external_scores` against them on the labelled rows (null columns without).
    """
    good, bad = valid_grid(components, clusters, projection.dim, len(X))
    if bad:
        log.warning("cluster sweep skips grid points (n_components, n_clusters) %s", bad)
    max_p = max(p for p, _ in good)
    Z_all = projection.transform(X, max_p)
    cumulative = np.cumsum(projection.explained_variance_ratio_)
    with threadpool_limits(kmeans_threads):
        options: dict[str, Any] = {"n_init": n_init, "max_iter": max_iter, "tol": tol, "seed": seed,
                   "full_n_init": full_n_init, "full_n_init_components": full_n_init_components}
        fits = fit_grid(Z_all, good, **options)
        stable = (seed_stability(Z_all, fits, good, stability_sample_size, **options)
                  if stability_sample_size > 0 else {})
    idx = sample_rows(len(X), silhouette_sample_size, seed)
    euclid = prefix_silhouettes_euclidean(Z_all[idx], {pt: fits[pt].labels_[idx] for pt in good})
    known = (np.array([c is not None for c in classes], dtype=bool) if classes is not None
             else np.zeros(len(X), dtype=bool))
    rows = []
    for p, k in good:
        Z = np.ascontiguousarray(Z_all[:, :p])
        km = fits[p, k]
        labels = km.labels_
        sq = silhouette_sqeuclidean(Z, labels, ClusterStats.of(Z, labels, k))
        rows.append({"n_components": p, "n_clusters": k, "n_rows": len(X),
                     "silhouette_euclidean_sampled": euclid[p, k],
                     "silhouette_sqeuclidean": float(sq.mean()),
                     "inertia": float(km.inertia_),
                     "explained_variance": float(cumulative[p - 1]),
                     **external_columns(classes, labels, known),
                     "stability_ari": stable.get((p, k), float("nan")), "chosen": False})
    frame = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    return frame.astype({"n_components": "int32", "n_clusters": "int32", "n_rows": "int64",
                         "labelled_rows": "int64"})


def external_columns(
    classes: np.ndarray | None, labels: np.ndarray, known: np.ndarray
) -> dict[str, float | int]:
    """A grid point's `external_scores` on the labelled rows (NaN without) and their count."""
    if classes is None or not known.any():
        return {**dict.fromkeys(EXTERNAL_METRICS, float("nan")), "labelled_rows": 0}
    truth = np.asarray(classes[known]).astype(str)
    return {**external_scores(truth, labels[known]), "labelled_rows": int(known.sum())}
