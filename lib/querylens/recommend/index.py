"""Recommendations for failing queries: the top successful, well-supported queries of the nearest
successful cluster, searched on the executors against a broadcast index (faiss: exact or IVF)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from querylens.runtime.arrays import normalize_rows, stack_rows
from querylens.runtime.config import RecommendConfig
from querylens.runtime.workers import Shared, map_batches_with

log = logging.getLogger("querylens")

SCHEMA = (
    "query_key string, query string, cluster_id int, label_success boolean, p_success double, "
    "rank int, rec_query_key string, rec_query string, rec_cluster_id int, similarity double, "
    "cluster_distance double, rec_cluster_success_rate double, rec_success_rate double, "
    "rec_support long, search string, reason string"
)
COLUMNS = [part.strip().split(" ")[0] for part in SCHEMA.split(",")]
IVF_FIT_SAMPLE = 50_000


@dataclass
class IVF:
    """A faiss `IndexIVFFlat` (inner product over unit rows) kept serialised, so it pickles
    into a broadcast; `index()` rebuilds it once per process."""

    centroids: np.ndarray
    blob: np.ndarray
    probe: int
    _index: Any = field(default=None, repr=False, compare=False)

    def index(self) -> Any:
        if self._index is None:
            import faiss

            self._index = faiss.deserialize_index(self.blob)
            self._index.nprobe = self.probe
        return self._index

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_index": None}


@dataclass
class ClusterIndex:
    """The recommendable queries of one successful cluster."""

    cluster_id: int
    success_rate: float
    keys: np.ndarray
    queries: np.ndarray
    vectors: np.ndarray
    scores: np.ndarray
    support: np.ndarray
    ivf: IVF | None = None

    @property
    def search(self) -> str:
        return "ivf" if self.ivf is not None else "exact"


@dataclass
class RecommendIndex:
    """Centroids of every cluster plus the candidate index of each successful cluster."""

    centroid_ids: np.ndarray
    centroids: np.ndarray
    rates: dict[int, float]
    clusters: dict[int, ClusterIndex] = field(default_factory=dict)

    @property
    def successful_ids(self) -> np.ndarray:
        return np.array(sorted(self.clusters), dtype=np.int64)


def stack(series: pd.Series) -> np.ndarray:
    """A column of embeddings as one float32 matrix of unit rows."""
    return normalize_rows(stack_rows(series))


def top_n(sims: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the n largest values (descending) and their columns; -inf / -1 pad short rows."""
    m, width = sims.shape
    k = min(n, width)
    out_s = np.full((m, n), -np.inf, dtype=np.float32)
    out_i = np.full((m, n), -1, dtype=np.int64)
    if k == 0 or m == 0:
        return out_s, out_i
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < width else np.tile(
        np.arange(width), (m, 1))
    vals = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    out_s[:, :k] = np.take_along_axis(vals, order, axis=1)
    out_i[:, :k] = np.take_along_axis(part, order, axis=1)
    out_i[~np.isfinite(out_s)] = -1
    return out_s, out_i


def faiss_result(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """faiss's (distances, labels) with the padding of `top_n`: -inf and -1."""
    sims = sims.astype(np.float32, copy=True)
    sims[idx < 0] = -np.inf
    return sims, idx.astype(np.int64)


def exact_search(q: np.ndarray, vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n cosine neighbours of unit rows `q` among unit rows `vectors`: faiss brute force
    (`IndexFlatIP`)."""
    import faiss

    if len(q) == 0 or len(vectors) == 0:
        return top_n(np.empty((len(q), len(vectors)), dtype=np.float32), n)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return faiss_result(*flat.search(np.ascontiguousarray(q, dtype=np.float32), n))


def build_ivf(vectors: np.ndarray, n_lists: int | None, probe: int, seed: int) -> IVF:
    """faiss IVF lists (k-means on a seeded sample of at most 50,000) over unit `vectors`."""
    import faiss

    n, dim = vectors.shape
    lists = max(1, min(n_lists or int(round(np.sqrt(n))), n))
    rng = np.random.default_rng(seed)
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    sample = data[rng.choice(n, size=min(n, IVF_FIT_SAMPLE), replace=False)]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1
    index.train(sample)
    index.add(data)
    centroids = index.quantizer.reconstruct_n(0, lists)
    return IVF(centroids, faiss.serialize_index(index), min(probe, lists))


def ivf_search(q: np.ndarray, ivf: IVF, vectors: np.ndarray,
               n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n neighbours among the members of each query's `probe` nearest lists (faiss);
    `vectors` are the indexed rows (kept for the signature shared with `exact_search`)."""
    del vectors
    if len(q) == 0:
        return top_n(np.empty((0, 0), dtype=np.float32), n)
    return faiss_result(*ivf.index().search(np.ascontiguousarray(q, dtype=np.float32), n))


def search(q: np.ndarray, cluster: ClusterIndex, n: int,
           method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-n neighbours in `cluster` with its own method, or `method` ('exact'/'ivf')."""
    if (method or cluster.search) == "ivf":
        if cluster.ivf is None:
            raise ValueError(f"cluster {cluster.cluster_id} has no IVF index")
        return ivf_search(q, cluster.ivf, cluster.vectors, n)
    return exact_search(q, cluster.vectors, n)


def build_index(centroids: pd.DataFrame, rates: dict[int, float], candidates: pd.DataFrame,
                config: RecommendConfig) -> RecommendIndex:
    """Index of successful clusters (rate >= the configured floor and >= 1 candidate).

    `centroids`: cluster_id, centroid; `candidates`: query_key, query, cluster_id,
    smoothed_score, support, embedding — already restricted to recommendable queries.
    """
    ids = centroids["cluster_id"].to_numpy(dtype=np.int64)
    index = RecommendIndex(ids, stack(centroids["centroid"]), dict(rates))
    for cluster_id, group in candidates.groupby("cluster_id"):
        rate = rates.get(int(cluster_id))
        if rate is None or rate < config.min_cluster_success_rate:
            continue
        if config.max_candidates_per_cluster:
            group = group.nlargest(config.max_candidates_per_cluster, "support")
        vectors = stack(group["embedding"])
        use_ivf = config.index == "ivf" or (
            config.index == "auto" and len(group) > config.exact_max_candidates)
        ivf = build_ivf(vectors, config.ivf_lists, config.ivf_probe,
                        config.seed + int(cluster_id)) if use_ivf else None
        index.clusters[int(cluster_id)] = ClusterIndex(
            int(cluster_id), float(rate), group["query_key"].to_numpy(),
            group["query"].to_numpy(), vectors,
            group["smoothed_score"].to_numpy(dtype=np.float64),
            group["support"].to_numpy(dtype=np.int64), ivf)
    return index


def target_clusters(q: np.ndarray, own: np.ndarray, index: RecommendIndex) -> np.ndarray:
    """Each query's target successful cluster: its own if successful, else the one whose
    centroid is nearest by cosine; -1 when there is none."""
    successful = index.successful_ids
    if len(successful) == 0 or len(q) == 0:
        return np.full(len(q), -1, dtype=np.int64)
    pos = {int(c): i for i, c in enumerate(index.centroid_ids)}
    nearest = successful[np.argmax(q @ index.centroids[[pos[int(c)] for c in successful]].T,
                                   axis=1)]
    return np.where(np.isin(own, successful), own, nearest)


@dataclass
class Hits:
    """Per failing query and rank: similarity, candidate position, its cluster, kept or not."""

    sims: np.ndarray
    idx: np.ndarray
    cluster: np.ndarray
    keep: np.ndarray


def search_groups(q: np.ndarray, own: np.ndarray, index: RecommendIndex,
                  scope: str) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Each query's target cluster (-1: none) and the (cluster, query rows) pairs to search:
    the target only, or with scope `successful_clusters` every successful cluster."""
    target = target_clusters(q, own, index)
    if scope == "successful_clusters":
        everyone = np.arange(len(q))
        return target, [(int(c), everyone) for c in index.successful_ids]
    return target, [(int(c), np.nonzero(target == c)[0]) for c in np.unique(target[target >= 0])]


def recommend_batch(batch: pd.DataFrame, index: RecommendIndex,
                    config: RecommendConfig) -> pd.DataFrame:
    """Recommendation rows for a batch of failing queries (query_key, query, cluster_id,
    success, p_success, embedding); a query without any gets one row with a null rank and
    rec_query_key saying why."""
    if batch.empty:
        return pd.DataFrame(columns=COLUMNS)
    q = stack(batch["embedding"])
    own = batch["cluster_id"].fillna(-1).to_numpy(dtype=np.int64)
    target, groups = search_groups(q, own, index, config.scope)
    n = config.n_recommendations
    sims = np.full((len(q), n), -np.inf, dtype=np.float32)
    idx = np.full((len(q), n), -1, dtype=np.int64)
    found_in = np.full((len(q), n), -1, dtype=np.int64)
    keys = batch["query_key"].to_numpy()
    for cluster_id, rows in groups:
        cluster = index.clusters[cluster_id]
        s, i = search(q[rows], cluster, n + 1)
        self_hit = (i >= 0) & (cluster.keys[np.maximum(i, 0)] == keys[rows, None])
        s = np.where(self_hit, -np.inf, s)
        sims[rows], pos = top_n(np.hstack([sims[rows], s]), n)
        idx[rows] = pick(np.hstack([idx[rows], i]), pos)
        found_in[rows] = pick(np.hstack([found_in[rows], np.full_like(i, cluster_id)]), pos)
    keep = (idx >= 0) & (sims >= config.min_similarity)
    return rows_frame(batch, q, target, Hits(sims, idx, found_in, keep), index, config)


def pick(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """`values` at column `pos` of each row, -1 where `pos` is -1."""
    return np.where(pos >= 0, np.take_along_axis(values, np.maximum(pos, 0), axis=1), -1)


def why_failing(label: object, p: object, cut: float) -> str:
    """Failing rows are labelled failures (a Python or numpy False) or predicted ones."""
    if (label is not None and not bool(label)) or p is None or pd.isna(p):
        return "failed (label)"
    return f"predicted to fail (p_success {p:.2f} < {cut:.2f})"


def centroid_distances(q: np.ndarray, clusters: np.ndarray, index: RecommendIndex) -> np.ndarray:
    """1 - cosine between query row i and the centroid of each cluster id in `clusters[i]`
    (shape (m,) or (m, k)); NaN where the id is -1 or has no centroid."""
    flat = clusters.reshape(len(q), -1)
    ids = index.centroid_ids
    if len(ids) == 0:
        return np.full(clusters.shape, np.nan)
    lookup = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    known = (flat >= 0) & (flat < len(lookup))
    rows = np.where(known, lookup[np.where(known, flat, 0)], -1)
    sims = np.einsum("md,mkd->mk", q, index.centroids[np.maximum(rows, 0)])
    return np.where(rows >= 0, 1.0 - sims.astype(np.float64), np.nan).reshape(clusters.shape)


def rows_frame(batch: pd.DataFrame, q: np.ndarray, target: np.ndarray, hits: Hits,
               index: RecommendIndex, config: RecommendConfig) -> pd.DataFrame:
    wide = config.scope == "successful_clusters"
    target_distance = centroid_distances(q, target, index)
    rec_distance = centroid_distances(q, hits.cluster, index)
    records = []
    for r, row in enumerate(batch.itertuples(index=False)):
        label = None if pd.isna(row.success) else bool(row.success)
        p = None if pd.isna(row.p_success) else float(row.p_success)
        cluster_id = None if pd.isna(row.cluster_id) else int(row.cluster_id)
        base = {"query_key": row.query_key, "query": row.query, "cluster_id": cluster_id,
                "label_success": label, "p_success": p}
        why = why_failing(label, p, config.predicted_fail_below)
        tid = int(target[r])
        if tid < 0:
            records.append({**base, "rank": None, "reason": f"{why}; no successful cluster"})
            continue
        if wide:
            head = f"{why}; searched all {len(index.clusters)} successful clusters"
        else:
            where = "its own cluster" if tid == cluster_id else "nearest successful cluster"
            head = (f"{why}; {where} {tid} (success rate {index.clusters[tid].success_rate:.2f}"
                    f", distance {target_distance[r]:.3f})")
        kept = np.nonzero(hits.keep[r])[0]
        if len(kept) == 0:
            searched = {} if wide else {
                "rec_cluster_id": tid, "cluster_distance": float(target_distance[r]),
                "rec_cluster_success_rate": index.clusters[tid].success_rate,
                "search": index.clusters[tid].search}
            records.append({**base, "rank": None, **searched,
                            "reason": f"{head}: no successful query with similarity >= "
                                      f"{config.min_similarity:.2f}"})
            continue
        for rank, j in enumerate(kept, start=1):
            c, cluster = int(hits.idx[r, j]), index.clusters[int(hits.cluster[r, j])]
            source = (f"; from cluster {cluster.cluster_id} (success rate "
                      f"{cluster.success_rate:.2f}, distance {rec_distance[r, j]:.3f})"
                      if wide else "")
            records.append({
                **base, "rank": rank, "rec_query_key": cluster.keys[c],
                "rec_query": cluster.queries[c], "rec_cluster_id": cluster.cluster_id,
                "similarity": float(hits.sims[r, j]),
                "cluster_distance": float(rec_distance[r, j]),
                "rec_cluster_success_rate": cluster.success_rate,
                "rec_success_rate": float(cluster.scores[c]),
                "rec_support": int(cluster.support[c]), "search": cluster.search,
                "reason": (f"{head}{source}; similarity {hits.sims[r, j]:.3f}; recommended "
                           f"query success score {cluster.scores[c]:.3f} over "
                           f"{cluster.support[c]} searches"),
            })
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    for name in ("cluster_id", "rank", "rec_cluster_id"):
        frame[name] = frame[name].astype("Int32")
    frame["rec_support"] = frame["rec_support"].astype("Int64")
    return frame


def recommend_df(failing: DataFrame, index: RecommendIndex,
                 config: RecommendConfig) -> tuple[DataFrame, Shared[RecommendIndex]]:
    """Recommendations computed in `mapInPandas` against the broadcast index; the caller
    destroys the returned broadcast once the rows are written."""

    def run(local: RecommendIndex, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield recommend_batch(batch, local, config)

    needed = ["query_key", "query", "cluster_id", "success", "p_success", "embedding"]
    return map_batches_with(failing.select(*needed), index, run, SCHEMA)


def recall_at_n(q: np.ndarray, own: np.ndarray, index: RecommendIndex,
                n: int) -> tuple[float | None, int]:
    """Mean share of the exact top-n found by IVF, over queries whose target cluster uses IVF."""
    target = target_clusters(q, own, index)
    hits, total, counted = 0, 0, 0
    for cluster_id in np.unique(target[target >= 0]):
        cluster = index.clusters[int(cluster_id)]
        if cluster.ivf is None:
            continue
        rows = np.nonzero(target == cluster_id)[0]
        _, exact = search(q[rows], cluster, n, "exact")
        _, approx = search(q[rows], cluster, n, "ivf")
        for e, a in zip(exact, approx, strict=True):
            want = set(e[e >= 0].tolist())
            hits += len(want & set(a[a >= 0].tolist()))
            total += len(want)
        counted += len(rows)
    return (hits / total if total else None), counted
