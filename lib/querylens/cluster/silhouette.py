"""Silhouettes: exact squared-Euclidean per query in O(n*k*d), exact Euclidean on a sample."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.types import DoubleType, StructField, StructType
from sklearn.metrics import silhouette_score

from querylens.runtime.workers import map_batches_with


@dataclass(frozen=True)
class ClusterStats:
    """Per-cluster count, sum of vectors and sum of squared norms (float64)."""

    counts: np.ndarray
    sums: np.ndarray
    sq_sums: np.ndarray

    @classmethod
    def of(cls, Z: np.ndarray, labels: np.ndarray, k: int) -> ClusterStats:
        Z = np.asarray(Z, dtype=np.float64)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.zeros((k, Z.shape[1]))
        np.add.at(sums, labels, Z)
        sq_sums = np.bincount(labels, weights=(Z * Z).sum(1), minlength=k)
        return cls(counts, sums, sq_sums)

    def __add__(self, other: ClusterStats) -> ClusterStats:
        return ClusterStats(self.counts + other.counts, self.sums + other.sums,
                            self.sq_sums + other.sq_sums)

    @property
    def means(self) -> np.ndarray:
        return self.sums / np.maximum(self.counts, 1.0)[:, None]

    @property
    def scatter(self) -> np.ndarray:
        """Sum over each cluster of squared distances to its mean (W_c)."""
        return np.maximum(self.sq_sums - (self.sums * self.sums).sum(1)
                          / np.maximum(self.counts, 1.0), 0.0)


def silhouette_sqeuclidean(Z: np.ndarray, labels: np.ndarray, stats: ClusterStats) -> np.ndarray:
    """Exact silhouette of each row under squared Euclidean distance, from cluster stats.

    The mean squared distance from x to the points of cluster c is ||x - mu_c||^2 + W_c / n_c,
    so a(x) and b(x) need only the k means and scatters. Matches sklearn's
    `silhouette_samples(metric="sqeuclidean")`, including 0 for singleton clusters.
    """
    Z = np.asarray(Z, dtype=np.float64)
    mu, n, w = stats.means, stats.counts, stats.scatter
    d = ((Z * Z).sum(1)[:, None] - 2.0 * Z @ mu.T + (mu * mu).sum(1)[None, :]).clip(min=0.0)
    mean_to = d + (w / np.maximum(n, 1.0))[None, :]
    rows = np.arange(len(Z))
    own_n = n[labels]
    a = (own_n * d[rows, labels] + w[labels]) / np.maximum(own_n - 1.0, 1.0)
    mean_to[:, n == 0] = np.inf
    mean_to[rows, labels] = np.inf
    b = mean_to.min(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (b - a) / np.maximum(a, b)
    s = np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)
    return np.where(own_n > 1, s, 0.0)


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of `size` of `n` rows (all when size >= n)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def silhouette_euclidean(Z: np.ndarray, labels: np.ndarray) -> float:
    """sklearn's `silhouette_score` (Euclidean); NaN when fewer than 2 or n labels."""
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return float("nan")
    return float(silhouette_score(Z, labels, metric="euclidean"))


def sampled_silhouette_euclidean(
    Z: np.ndarray, labels: np.ndarray, size: int, seed: int
) -> tuple[float, np.ndarray]:
    """Exact Euclidean silhouette over a seeded sample of rows, and the sample's indices."""
    idx = sample_rows(len(Z), size, seed)
    return silhouette_euclidean(Z[idx], labels[idx]), idx


def chunk_silhouette(
    dist: np.ndarray, rows: np.ndarray, codes: np.ndarray, onehot: np.ndarray,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For `rows`, given their distances `dist` to every point (zero to themselves) and the
    points' cluster `codes` (with `onehot` and `counts`): the silhouette (0 for singletons),
    a(x), the nearest other cluster's code and b(x)."""
    index = np.arange(len(rows))
    sums = dist @ onehot
    own = codes[rows]
    own_n = counts[own]
    a = sums[index, own] / np.maximum(own_n - 1.0, 1.0)
    sums /= counts[None, :]
    sums[index, own] = np.inf
    other = sums.argmin(1)
    b = sums[index, other]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (b - a) / np.maximum(a, b)
    return np.where(own_n > 1, np.nan_to_num(value), 0.0), a, other, b


def silhouette_samples_euclidean(
    Z: np.ndarray, labels: np.ndarray, chunk_rows: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact Euclidean silhouette of each row (sklearn's `silhouette_samples`, 0 for
    singletons), the nearest other cluster (the one whose mean distance gives b(x)) and a(x),
    the row's mean distance to the other members of its own cluster.

    Distances go in row chunks of `chunk_rows` (memory ~2 * chunk_rows * len(Z) floats).
    """
    Z = np.asarray(Z, dtype=np.float64)
    m = len(Z)
    ids, codes = np.unique(labels, return_inverse=True)
    onehot = np.zeros((m, len(ids)))
    onehot[np.arange(m), codes] = 1.0
    counts = onehot.sum(0)
    sq = (Z * Z).sum(1)
    s, a_all = np.zeros(m), np.zeros(m)
    nearest = np.full(m, -1, dtype=np.int64)
    for start in range(0, m, chunk_rows):
        rows = np.arange(start, min(start + chunk_rows, m))
        dist = np.sqrt(np.maximum(sq[rows, None] - 2.0 * Z[rows] @ Z.T + sq[None, :], 0.0))
        dist[np.arange(len(rows)), rows] = 0.0
        s[rows], a_all[rows], other, b = chunk_silhouette(dist, rows, codes, onehot, counts)
        nearest[rows] = np.where(np.isfinite(b), ids[other], -1)
    return s, nearest, a_all


def prefix_silhouettes_euclidean(
    Z: np.ndarray, labelings: dict[tuple[int, int], np.ndarray], chunk_rows: int = 1024
) -> dict[tuple[int, int], float]:
    """sklearn's `silhouette_score` (Euclidean) of each labelling (p, k) of the rows of
    `Z[:, :p]`, for all labellings in one pass; NaN where fewer than 2 or n labels.

    The Gram matrix of a prefix of columns is the previous prefix's plus a float64 BLAS
    product over the new columns, so every prefix together costs one m x m x max(p)
    product. Rows go in chunks of `chunk_rows` (memory ~3 * chunk_rows * m floats), and
    per-cluster distance sums are a product with each labelling's one-hot matrix.
    """
    Z = np.asarray(Z, dtype=np.float64)
    m = len(Z)
    ps = sorted({p for p, _ in labelings})
    sq = np.cumsum(Z * Z, axis=1)
    coded: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for key, labels in labelings.items():
        _, codes = np.unique(labels, return_inverse=True)
        onehot = np.zeros((m, codes.max() + 1 if m else 0))
        onehot[np.arange(m), codes] = 1.0
        coded[key] = (codes, onehot, onehot.sum(0))
    blocks = [np.ascontiguousarray(Z[:, a:b]) for a, b in zip([0, *ps], ps, strict=False)]
    scores = {key: np.zeros(m) for key in labelings}
    for start in range(0, m, chunk_rows):
        rows = np.arange(start, min(start + chunk_rows, m))
        gram = np.zeros((len(rows), m))
        dist = np.empty_like(gram)
        for p, block in zip(ps, blocks, strict=True):
            gram += block[rows] @ block.T
            np.multiply(gram, -2.0, out=dist)
            dist += sq[rows, p - 1][:, None]
            dist += sq[:, p - 1][None, :]
            np.maximum(dist, 0.0, out=dist)
            np.sqrt(dist, out=dist)
            dist[np.arange(len(rows)), rows] = 0.0
            for key in (key for key in labelings if key[0] == p):
                scores[key][rows] = chunk_silhouette(dist, rows, *coded[key])[0]
    return {key: float(scores[key].mean()) if 2 <= len(coded[key][2]) < m else float("nan")
            for key in labelings}


def spark_cluster_stats(assigned: DataFrame, k: int, dims: int) -> ClusterStats:
    """ClusterStats of `assigned` (columns `reduced` array<double>, `cluster_id`) in Spark."""

    def partial(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total = ClusterStats(np.zeros(k), np.zeros((k, dims)), np.zeros(k))
        for batch in batches:
            if len(batch):
                Z = np.stack(batch["reduced"].to_numpy())
                total = total + ClusterStats.of(Z, batch["cluster_id"].to_numpy(), k)
        yield pd.DataFrame({"counts": [total.counts], "sums": [total.sums.ravel()],
                            "sq_sums": [total.sq_sums]})

    schema = "counts array<double>, sums array<double>, sq_sums array<double>"
    rows = assigned.select("reduced", "cluster_id").mapInPandas(partial, schema).collect()
    stats = ClusterStats(np.zeros(k), np.zeros((k, dims)), np.zeros(k))
    for r in rows:
        stats = stats + ClusterStats(np.array(r.counts), np.array(r.sums).reshape(k, dims),
                                     np.array(r.sq_sums))
    return stats


def with_silhouette(assigned: DataFrame, stats: ClusterStats) -> DataFrame:
    """`assigned` plus `silhouette_sqeuclidean`, computed per partition from broadcast stats."""
    schema = StructType([*assigned.schema.fields,
                         StructField("silhouette_sqeuclidean", DoubleType())])

    def score(s: ClusterStats, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if len(batch):
                Z = np.stack(batch["reduced"].to_numpy())
                batch["silhouette_sqeuclidean"] = silhouette_sqeuclidean(
                    Z, batch["cluster_id"].to_numpy(), s)
            else:
                batch["silhouette_sqeuclidean"] = pd.Series(dtype="float64")
            yield batch

    scored, _ = map_batches_with(assigned, stats, score, schema)
    return scored
