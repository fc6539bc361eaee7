"""Trust per cluster: clusterwise bootstrap stability (Hennig 2007) and the trusted and
catch-all rules."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

Refit = Callable[[np.ndarray, int], np.ndarray]


def best_match_jaccard(original: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cluster ids of `original` and, for each, the largest Jaccard |C & D| / |C | D| over
    the clusters D of `other`, both labellings of the same rows."""
    ids, codes = np.unique(original, return_inverse=True)
    _, other_codes = np.unique(other, return_inverse=True)
    table = np.zeros((len(ids), other_codes.max() + 1 if len(other_codes) else 0))
    np.add.at(table, (codes, other_codes), 1.0)
    union = table.sum(1)[:, None] + table.sum(0)[None, :] - table
    return ids, (table / np.maximum(union, 1.0)).max(1, initial=0.0)


def clusterwise_stability(
    Z: np.ndarray, labels: np.ndarray, refit: Refit, n_boot: int, seed: int
) -> dict[int, float]:
    """Hennig's clusterwise bootstrap: the mean over `n_boot` bootstrap draws of rows of `Z`
    of each cluster's best-match Jaccard against `refit(Z[draw], b)` (labels of the drawn
    rows), on the distinct rows drawn. A cluster with no row in a draw skips that draw; one
    never drawn is left out."""
    rng = np.random.default_rng(seed)
    totals: dict[int, float] = {}
    seen: dict[int, int] = {}
    for b in range(n_boot):
        draw = rng.integers(0, len(Z), len(Z))
        fitted = np.asarray(refit(Z[draw], b))
        rows, first = np.unique(draw, return_index=True)
        ids, best = best_match_jaccard(labels[rows], fitted[first])
        for cluster, value in zip(ids.tolist(), best.tolist(), strict=True):
            totals[cluster] = totals.get(cluster, 0.0) + value
            seen[cluster] = seen.get(cluster, 0) + 1
    return {c: totals[c] / seen[c] for c in sorted(totals)}


def catch_all_flags(
    mean_distance: np.ndarray, mean_within: np.ndarray, ratio: float
) -> np.ndarray:
    """Clusters whose members are far from their centroid and from each other: mean distance
    to the centroid and mean distance between members (a NaN where unknown) both at least
    `ratio` times the median cluster's."""
    mean_distance = np.asarray(mean_distance, dtype=np.float64)
    mean_within = np.asarray(mean_within, dtype=np.float64)
    if len(mean_distance) < 3:
        return np.zeros(len(mean_distance), dtype=bool)
    with np.errstate(invalid="ignore"):
        far = mean_distance >= ratio * np.nanmedian(mean_distance)
        if np.isfinite(mean_within).any():
            far &= mean_within >= ratio * np.nanmedian(mean_within)
        else:
            far &= False
    return far


def trusted_flags(
    size: np.ndarray, stability: np.ndarray, silhouette: np.ndarray, catch_all: np.ndarray,
    *, min_stability: float, min_size: int,
) -> pd.Series:
    """trusted = stability >= min_stability, mean silhouette > 0, size >= min_size and not a
    catch-all; null where the stability is unknown (no bootstrap)."""
    stability = np.asarray(stability, dtype=np.float64)
    ok = ((stability >= min_stability) & (np.asarray(silhouette, dtype=np.float64) > 0)
          & (np.asarray(size) >= min_size) & ~np.asarray(catch_all, dtype=bool))
    return pd.Series([None if np.isnan(s) else bool(t) for s, t in zip(stability, ok,
                                                                       strict=True)],
                     dtype="object")
