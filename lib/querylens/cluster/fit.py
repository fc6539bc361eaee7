"""Fit or score: embeddings -> assignments with silhouettes, clusters, sweep, metrics."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from querylens.cluster.backends import (
    BACKENDS,
    choose_backend,
    fit_kmeans_mllib,
    fit_kmeans_sklearn,
    fit_projection_mllib,
    fit_projection_sklearn,
)
from querylens.cluster.evaluate import classes_of, external_metrics
from querylens.cluster.model import ClusterModel, Projection, apply_ids, match_clusters
from querylens.cluster.naming import (
    exemplars,
    name_clusters,
    next_clusters,
    stop_words,
    term_counts,
)
from querylens.cluster.select import Choice, choose, components_of, mark_chosen
from querylens.cluster.silhouette import (
    silhouette_samples_euclidean,
    spark_cluster_stats,
    with_silhouette,
)
from querylens.cluster.sweep import clusters_grid, components_grid, pca_variance, run_sweep
from querylens.cluster.trust import catch_all_flags, clusterwise_stability, trusted_flags
from querylens.runtime.arrays import stack_rows
from querylens.runtime.config import ClusterConfig
from querylens.runtime.errors import DataError
from querylens.runtime.workers import map_batches_with

log = logging.getLogger("querylens")

MODEL_NAME = "cluster_kmeans"
METRICS_SCHEMA = "model string, split string, metric string, value double"
ASSIGNED_SCHEMA = ("query_key string, reduced array<double>, cluster_id int, distance double, "
                   "next_cluster_id int, next_distance double")
ASSIGNMENT_COLUMNS = ["query_key", "cluster_id", "distance", "silhouette_sqeuclidean",
                      "next_cluster_id", "next_distance"]


@dataclass
class ClusterResult:
    """Everything one fit (or scoring) produces; `assignments` is cached until `unpersist`."""

    model: ClusterModel
    assignments: DataFrame
    clusters: DataFrame
    metrics: pd.DataFrame
    pca_variance: pd.DataFrame | None = None
    sweep: pd.DataFrame | None = None
    silhouette_samples: pd.DataFrame | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    cached: list[DataFrame] = field(default_factory=list)

    def unpersist(self) -> None:
        for df in self.cached:
            df.unpersist()


@dataclass(frozen=True)
class InputStats:
    n_rows: int
    dim: int
    rejected_nonfinite: int


def check_embeddings(
    embeddings: DataFrame, model_id: str | None, policy: str = "error"
) -> tuple[DataFrame, InputStats]:
    """Reject mixed dimensions and NaN/inf/null embeddings, with counts and the model id."""
    bad = F.col("embedding").isNull() | F.exists(
        "embedding", lambda x: F.isnan(x) | x.isNull() | (F.abs(x) == float("inf")))
    by_dim = (embeddings.groupBy(F.coalesce(F.size("embedding"), F.lit(-1)).alias("dim"))
              .agg(F.count("*").alias("n"), F.sum(bad.cast("long")).alias("bad")).collect())
    model = model_id or "unknown model"
    dims = {r.dim: r.n for r in by_dim if r.dim > 0}
    n_bad = sum(r.bad for r in by_dim)
    if len(dims) > 1:
        raise DataError(f"embeddings of mixed dimension for {model}: "
                         + ", ".join(f"{n} rows of dim {d}" for d, n in sorted(dims.items())))
    if n_bad:
        message = f"{n_bad} embeddings with NaN, inf or null values for {model}"
        if policy != "drop":
            raise DataError(message + " (set cluster.bad_embeddings=drop to skip them)")
        log.warning("%s: dropped", message)
        embeddings = embeddings.where(~bad)
    n_rows = sum(r.n for r in by_dim) - n_bad
    if n_rows < 2:
        raise DataError(f"clustering needs at least 2 queries with embeddings, got {n_rows} "
                         f"({model})")
    return embeddings, InputStats(n_rows, next(iter(dims)), n_bad)


def check_sizes(config: ClusterConfig, stats: InputStats) -> None:
    """k and n_components (where not `auto`) against the number of queries and the embedding
    dimension."""
    if config.n_clusters != "auto" and config.n_clusters > stats.n_rows:
        raise DataError(f"cluster.n_clusters={config.n_clusters} is larger than the "
                         f"{stats.n_rows} distinct queries")
    if config.n_components != "auto" and config.n_components > min(stats.dim, stats.n_rows):
        raise DataError(f"cluster.n_components={config.n_components} is larger than the "
                         f"embedding dimension {stats.dim} or the {stats.n_rows} queries")


def hash_order(seed: int) -> F.Column:
    return F.xxhash64(F.col("query_key"), F.lit(seed))


def collect_sample(
    df: DataFrame, columns: list[str], n_rows: int, size: int, seed: int
) -> pd.DataFrame:
    """A seeded sample of about `size` rows (all when fewer), ordered by a seeded hash."""
    frac = min(1.0, (1.1 * size + 1000) / n_rows)
    h = hash_order(seed)
    picked = df.select(*columns, h.alias("_h"))
    if frac < 1.0:
        picked = picked.where((F.abs(h % 1_000_000) / 1_000_000.0) < frac)
    rows = pd.DataFrame(picked.toPandas()).sort_values(["_h", "query_key"]).head(size)
    return rows.drop(columns="_h").reset_index(drop=True)


def stack(column: pd.Series) -> np.ndarray:
    """A column of arrays as one float64 matrix."""
    return stack_rows(column, np.float64)


def assign(df: DataFrame, model: ClusterModel) -> DataFrame:
    """Nearest and next-nearest centroid of each row (`embedding` or already `reduced`)."""
    source = "embedding" if "embedding" in df.columns else "reduced"

    def run(m: ClusterModel, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if not len(batch):
                continue
            X = np.stack(batch[source].to_numpy())
            Z = m.transform(X) if source == "embedding" else X.astype(np.float64)
            d = m.sq_distances(Z)
            order = np.argsort(d, axis=1)[:, :2] if d.shape[1] > 1 else np.zeros((len(Z), 2), int)
            rows = np.arange(len(Z))
            yield pd.DataFrame({
                "query_key": batch["query_key"].to_numpy(), "reduced": list(Z),
                "cluster_id": order[:, 0].astype("int32"),
                "distance": np.sqrt(d[rows, order[:, 0]]),
                "next_cluster_id": order[:, 1].astype("int32"),
                "next_distance": np.sqrt(d[rows, order[:, 1]]),
            })

    assigned, _ = map_batches_with(df.select("query_key", source), model, run, ASSIGNED_SCHEMA)
    return assigned


def project(df: DataFrame, projection: Projection, n_components: int) -> DataFrame:
    """`query_key`, `reduced` = normalised, centred, projected `embedding`."""

    def run(p: Projection, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if len(batch):
                Z = p.transform(np.stack(batch["embedding"].to_numpy()), n_components)
                yield pd.DataFrame({"query_key": batch["query_key"].to_numpy(),
                                    "reduced": list(Z)})

    projected, _ = map_batches_with(df.select("query_key", "embedding"), projection, run,
                                    "query_key string, reduced array<double>")
    return projected


def metric_rows(split: str, values: dict[str, float]) -> list[dict[str, Any]]:
    return [{"model": MODEL_NAME, "split": split, "metric": k, "value": float(v)}
            for k, v in values.items()]


def describe(
    spark: SparkSession, assigned: DataFrame, queries: DataFrame, model: ClusterModel,
    config: ClusterConfig, n_rows: int, split: str,
) -> ClusterResult:
    """Silhouettes, the clusters table and quality metrics for assigned rows."""
    assigned = assigned.persist(StorageLevel.MEMORY_AND_DISK)
    stats = spark_cluster_stats(assigned, model.n_clusters, model.n_components)
    scored = with_silhouette(assigned, stats).join(
        queries.select("query_key", "query", "n_searches"), "query_key", "left"
    ).persist(StorageLevel.MEMORY_AND_DISK)
    sample = collect_sample(scored, ["query_key", "reduced", "cluster_id"], n_rows,
                            config.silhouette_sample_size, config.seed)
    assigned.unpersist()
    Zs, ls = stack(sample["reduced"]), sample["cluster_id"].to_numpy()
    sil_sample, nearest, within = sample_silhouettes(Zs, ls)
    sampled = pd.DataFrame({"cluster_id": ls, "s": sil_sample}).groupby("cluster_id")["s"].mean()

    summary = pd.DataFrame(scored.groupBy("cluster_id").agg(
        F.count("*").alias("size"),
        F.sum("n_searches").cast("long").alias("n_searches"),
        F.avg("silhouette_sqeuclidean").alias("mean_silhouette_sqeuclidean"),
        F.sum(F.col("distance") ** 2).alias("inertia"),
        F.avg("distance").alias("mean_distance"),
    ).toPandas()).set_index("cluster_id").sort_index()
    nxt = next_clusters(model.centroids_)
    ids = summary.index.to_numpy()
    names = name_clusters(term_counts(scored, stop_words(config.stop_words)).toPandas(), ids,
                          config.n_terms, config.label_terms, config.label_min_df)
    table = pd.DataFrame({
        "cluster_id": ids.astype("int32"),
        "size": summary["size"].to_numpy().astype("int64"),
        "share": summary["size"].to_numpy() / n_rows,
        "n_searches": summary["n_searches"].fillna(0).to_numpy().astype("int64"),
        "mean_silhouette_sqeuclidean": summary["mean_silhouette_sqeuclidean"].to_numpy(),
        "mean_silhouette_euclidean_sampled": [float(sampled.get(i, np.nan)) for i in ids],
        "top_terms": names["top_terms"].tolist(),
        "next_cluster_id": nxt[ids].astype("int32"),
        "centroid_distance_next": np.linalg.norm(
            model.centroids_[ids] - model.centroids_[nxt[ids]], axis=1),
    })
    table["label"] = names["label"].tolist()
    table = with_trust(table, summary["mean_distance"].to_numpy(),
                       mean_within(ls, within, ids), Zs, ls, model.n_clusters, config)
    clusters = spark.createDataFrame(table, CLUSTERS_SCHEMA).join(
        exemplars(scored, config.n_exemplars), "cluster_id", "left").select(*CLUSTER_COLUMNS)
    total_sil = float((summary["mean_silhouette_sqeuclidean"] * summary["size"]).sum() / n_rows)
    euclid = float(np.nanmean(sil_sample)) if len(sil_sample) else float("nan")
    metrics = metric_rows(split, {"silhouette_sqeuclidean": total_sil,
                                  "inertia": float(summary["inertia"].sum()),
                                  "n_rows": n_rows, "n_clusters_nonempty": len(ids)})
    metrics += metric_rows(f"{split}_sample", {"silhouette_euclidean_sampled": euclid,
                                               "sample_rows": len(ls)})
    trusted = table["trusted"]
    return ClusterResult(model, scored.select(*ASSIGNMENT_COLUMNS), clusters,
                         pd.DataFrame(metrics), cached=[scored],
                         silhouette_samples=silhouette_rows(sample["query_key"], ls, sil_sample,
                                                            nearest),
                         facts={"silhouette_sqeuclidean": total_sil,
                                "silhouette_euclidean_sampled": euclid,
                                "n_trusted": int((trusted == True).sum()),  # noqa: E712
                                "n_catch_all": int(table["catch_all"].sum())})


def sample_silhouettes(Z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """`silhouette_samples_euclidean` of the sample; NaN (and no nearest cluster, -1) when it
    has fewer than 2 clusters or only singletons."""
    if 1 < len(np.unique(labels)) < len(labels):
        return silhouette_samples_euclidean(Z, labels)
    nan = np.full(len(labels), np.nan)
    return nan, np.full(len(labels), -1), nan


def silhouette_rows(keys: pd.Series, labels: np.ndarray, silhouette: np.ndarray,
                    nearest: np.ndarray) -> pd.DataFrame:
    """The `silhouette_samples` table's rows."""
    return pd.DataFrame({
        "query_key": keys.astype(str).to_numpy(), "cluster_id": labels.astype("int32"),
        "silhouette": silhouette,
        "next_cluster_id": pd.array([int(c) if c >= 0 else None for c in nearest],
                                    dtype="Int32")})


SILHOUETTE_SAMPLES_SCHEMA = ("query_key string, cluster_id int, silhouette double, "
                             "next_cluster_id int")


def mean_within(labels: np.ndarray, within: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per cluster of `ids`: the mean distance between its sampled members (NaN under 2)."""
    frame = pd.DataFrame({"c": labels, "a": within})
    sizes = frame.groupby("c")["a"].transform("size")
    means = frame[sizes > 1].groupby("c")["a"].mean()
    return np.array([float(means.get(i, np.nan)) for i in ids])


def bootstrap_stability(
    Z: np.ndarray, labels: np.ndarray, k: int, config: ClusterConfig
) -> dict[int, float]:
    """`clusterwise_stability` of the model's clusters on the first
    `stability_bootstrap_sample_size` sample rows, refitting KMeans (sklearn, `n_init`
    restarts, one thread) on each of `stability_bootstraps` bootstrap draws."""
    m = config.stability_bootstrap_sample_size
    Z, labels = Z[:m], labels[:m]
    if config.stability_bootstraps == 0 or len(Z) <= 2 * k:
        return {}

    def refit(X: np.ndarray, b: int) -> np.ndarray:
        return np.asarray(fit_kmeans_sklearn(X, k, config.n_init, config.max_iter, config.tol,
                                             config.seed + 1 + b).labels_)

    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clusterwise_stability(Z, labels, refit, config.stability_bootstraps, config.seed)


def with_trust(
    table: pd.DataFrame, mean_distance: np.ndarray, within: np.ndarray, Z: np.ndarray,
    labels: np.ndarray, k: int, config: ClusterConfig,
) -> pd.DataFrame:
    """`table` plus `stability`, `catch_all` and `trusted` (rules in `trust.py`; the mean
    silhouette is the sampled Euclidean one, else the squared-Euclidean one)."""
    ids = table["cluster_id"].to_numpy()
    stability = bootstrap_stability(Z, labels, k, config)
    table["stability"] = [stability.get(int(i), np.nan) for i in ids]
    table["catch_all"] = catch_all_flags(mean_distance, within, config.catch_all_ratio)
    silhouette = table["mean_silhouette_euclidean_sampled"].fillna(
        table["mean_silhouette_sqeuclidean"])
    table["trusted"] = trusted_flags(
        table["size"].to_numpy(), table["stability"].to_numpy(), silhouette.to_numpy(),
        table["catch_all"].to_numpy(), min_stability=config.trust_min_stability,
        min_size=config.trust_min_size)
    return table


CLUSTERS_SCHEMA = (
    "cluster_id int, size long, share double, n_searches long, "
    "mean_silhouette_sqeuclidean double, mean_silhouette_euclidean_sampled double, "
    "top_terms array<string>, next_cluster_id int, centroid_distance_next double, "
    "label string, stability double, catch_all boolean, trusted boolean"
)
CLUSTER_COLUMNS = ["cluster_id", "size", "share", "n_searches", "mean_silhouette_sqeuclidean",
                   "mean_silhouette_euclidean_sampled", "label", "top_terms", "central_queries",
                   "top_queries", "next_cluster_id", "centroid_distance_next", "stability",
                   "trusted", "catch_all"]


def fit_clusters(
    spark: SparkSession, embeddings: DataFrame, queries: DataFrame, config: ClusterConfig,
    *, model_id: str | None = None, previous: ClusterModel | None = None,
    labels: DataFrame | None = None,
) -> ClusterResult:
    """Fit normaliser -> PCA -> KMeans with the configured backend and describe the result;
    with reference `labels` (query_key, class), validate the model and the sweep against them."""
    embeddings, stats = check_embeddings(embeddings, model_id, config.bad_embeddings)
    check_sizes(config, stats)
    n = stats.n_rows
    backend = choose_backend(config, n)
    fit_size = min(n, config.fit_sample_size or n) if backend == "sklearn" else 0
    sweep_size = config.sweep_sample_size if config.sweep else 0
    raw = None
    if max(fit_size, sweep_size) > 0:
        raw = collect_sample(embeddings, ["query_key", "embedding"], n,
                             max(fit_size, sweep_size), config.seed)
    cached: list[DataFrame] = []
    if backend == "sklearn":
        assert raw is not None
        X = stack(raw["embedding"].iloc[:fit_size])
        projection = fit_projection_sklearn(X, config.seed)
    else:
        projection = fit_projection_mllib(embeddings, stats.dim, n)
    sweep, choice = sweep_and_choose(spark, raw, projection, config, n, labels)
    p, k = choice.n_components, choice.n_clusters
    if backend == "sklearn":
        km = fit_kmeans_sklearn(projection.transform(X, p), k, config.n_init, config.max_iter,
                                config.tol, config.seed)
        centroids = km.cluster_centers_
        source = embeddings
    else:
        source = project(embeddings, projection, p).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(source)
        centroids = fit_kmeans_mllib(source, k, config.max_iter, config.tol, config.seed,
                                     config.init_steps)
    model = ClusterModel(projection, np.asarray(centroids, dtype=np.float64), {
        "backend": backend, "seed": config.seed, "embedding_model_id": model_id,
        "n_init": config.n_init, "max_iter": config.max_iter, "fit_rows": fit_size or n})
    facts: dict[str, Any] = {"backend": backend, "n_rows": n, "dim": stats.dim,
                             "rejected_nonfinite": stats.rejected_nonfinite,
                             "fit_rows": fit_size or n, **choice.facts()}
    if previous is not None and config.match_previous:
        ids = match_clusters(model, previous)
        model = apply_ids(model, ids)
        mapping = {"previous_version": previous.version, "new_to_previous": ids.tolist()}
        model = ClusterModel(model.projection, model.centroids_, {**model.meta, **mapping})
        facts["id_mapping"] = mapping
    assigned = assign(source, model)
    result = describe(spark, assigned, queries, model, config, n, "all")
    result.cached += cached
    result.facts.update(facts)
    result.pca_variance = pca_variance(projection)
    explained = float(np.cumsum(projection.explained_variance_ratio_)[p - 1])
    extra = metric_rows("all", {"explained_variance": explained})
    extra += metric_rows("choice", {"n_components": p, "n_clusters": k,
                                    "n_components_auto": config.n_components == "auto",
                                    "n_clusters_auto": config.n_clusters == "auto"})
    result.sweep = sweep
    extra += stability(spark, result.cached[0], model, config, n, backend)
    if labels is not None:
        extra += metric_rows("external", external_metrics(result.cached[0], labels))
    result.metrics = pd.concat([result.metrics, pd.DataFrame(extra)], ignore_index=True)
    return result


def sweep_and_choose(
    spark: SparkSession, raw: pd.DataFrame | None, projection: Projection,
    config: ClusterConfig, n_rows: int, labels: DataFrame | None,
) -> tuple[pd.DataFrame | None, Choice]:
    """The sweep on the first `sweep_sample_size` rows of `raw` (when `cluster.sweep`; with the
    chosen or configured n_components added to its grid) and the `select.choose` of it."""
    cumulative = np.cumsum(projection.explained_variance_ratio_)
    if not config.sweep:
        return None, choose(config, cumulative, None)
    grid = components_grid(config.sweep_components, len(cumulative),
                           components_of(config, cumulative)[0])
    assert raw is not None
    size = config.sweep_sample_size
    sweep = run_sweep(
        stack(raw["embedding"].iloc[:size]), projection, grid,
        clusters_grid(config.sweep_clusters, n_rows, config.sweep_clusters_min,
                      config.sweep_clusters_max, config.sweep_clusters_points),
        n_init=config.sweep_n_init, max_iter=config.max_iter, tol=config.tol, seed=config.seed,
        silhouette_sample_size=config.sweep_silhouette_sample_size,
        full_n_init=config.sweep_full_n_init,
        full_n_init_components=config.sweep_full_n_init_components,
        stability_sample_size=config.sweep_stability_sample_size,
        classes=(None if labels is None else
                 classes_of(spark, raw["query_key"].iloc[:size], labels)))
    choice = choose(config, cumulative, sweep)
    return mark_chosen(sweep, choice), choice


def stability(
    spark: SparkSession, scored: DataFrame, model: ClusterModel, config: ClusterConfig,
    n_rows: int, backend: str,
) -> list[dict[str, Any]]:
    """ARI between the model and refits with other seeds (and the other backend) on a sample."""
    others = [b for b in BACKENDS if b != backend] if config.compare_backends else []
    if not config.stability_seeds and not others:
        return []
    sample = collect_sample(scored, ["query_key", "reduced", "cluster_id"], n_rows,
                            config.stability_sample_size, config.seed + 1)
    Z, labels = stack(sample["reduced"]), sample["cluster_id"].to_numpy()
    k = model.n_clusters
    if k >= len(Z):
        return []
    values: dict[str, float] = {}
    for seed in config.stability_seeds:
        refit = refit_labels(spark, Z, k, config, seed, backend)
        values[f"ari_seed_{seed}"] = adjusted_rand_score(labels, refit)
    for other in others:
        values[f"ari_backend_{other}"] = adjusted_rand_score(
            labels, refit_labels(spark, Z, k, config, config.seed, other))
    return metric_rows("stability_sample", values)


def refit_labels(
    spark: SparkSession, Z: np.ndarray, k: int, config: ClusterConfig, seed: int, backend: str
) -> np.ndarray:
    """Labels of driver rows `Z` under a fresh KMeans fit with `seed` on `backend`."""
    if backend == "sklearn":
        return fit_kmeans_sklearn(Z, k, config.n_init, config.max_iter, config.tol,
                                  seed).labels_
    frame = spark.createDataFrame(pd.DataFrame({"reduced": list(Z)}), "reduced array<double>")
    centers = fit_kmeans_mllib(frame, k, config.max_iter, config.tol, seed, config.init_steps)
    d = ((Z[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


def score_clusters(
    spark: SparkSession, embeddings: DataFrame, queries: DataFrame, model: ClusterModel,
    config: ClusterConfig, *, model_id: str | None = None, labels: DataFrame | None = None,
) -> ClusterResult:
    """Assign queries to a saved model's clusters without refitting, and describe them (and
    validate them against reference `labels`)."""
    embeddings, stats = check_embeddings(embeddings, model_id, config.bad_embeddings)
    saved = model.meta.get("embedding_model_id")
    if saved and model_id and saved != model_id:
        raise DataError(f"cluster model v{model.version} was fitted on embeddings of {saved}, "
                         f"not {model_id}")
    if stats.dim != model.projection.dim:
        raise DataError(f"embeddings of dimension {stats.dim} ({model_id}) cannot be scored "
                         f"by cluster model v{model.version} of dimension {model.projection.dim}")
    result = describe(spark, assign(embeddings, model), queries, model, config, stats.n_rows,
                      "score")
    result.facts.update({"model_version": model.version, "n_rows": stats.n_rows,
                         "rejected_nonfinite": stats.rejected_nonfinite})
    if labels is not None:
        result.metrics = pd.concat([result.metrics, pd.DataFrame(metric_rows(
            "score_external", external_metrics(result.cached[0], labels)))], ignore_index=True)
    return result
