"""Read one run's output tables into pandas for the report; absent tables become None."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from querylens.runtime.arrays import to_pandas
from querylens.runtime.config import SuccessConfig
from querylens.runtime.tables import qualified, read_run_table, table_exists

log = logging.getLogger("querylens")

SMALL_TABLES = ("pca_variance", "cluster_sweep", "clusters", "cluster_success", "model_metrics",
                "success_calibration")
MANIFEST_FIELDS = ("config_json", "versions_json", "timings_json", "counts_json", "facts_json")


@dataclass
class ReportData:
    """Everything the report draws, already in pandas; None marks a table this run lacks."""

    run_id: str
    database: str
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    knife: pd.DataFrame | None = None
    evaluation: pd.DataFrame | None = None
    evaluation_note: str = ""
    failing: pd.DataFrame | None = None
    recommendations: pd.DataFrame | None = None
    embeddings: pd.DataFrame | None = None
    embeddings_note: str = ""

    def table(self, name: str) -> pd.DataFrame | None:
        frame = self.tables.get(name)
        return None if frame is None or frame.empty else frame

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})

    @property
    def facts(self) -> dict[str, Any]:
        return self.manifest.get("facts", {})

    def success_setting(self, key: str) -> Any:
        """`success.<key>` of the run's config, else its default."""
        section = self.config.get("success", {}) if isinstance(self.config, dict) else {}
        return section.get(key, getattr(SuccessConfig(), key))

    @property
    def skipped(self) -> dict[str, str]:
        """Why each stage this run skipped did not apply, by stage name."""
        facts = self.facts if isinstance(self.facts, dict) else {}
        return {name: str(f["skipped"]) for name, f in facts.items()
                if isinstance(f, dict) and f.get("skipped")}

    def chosen(self) -> tuple[int | None, int | None]:
        """(n_components, n_clusters) of the run: facts first, then config (unless `auto`),
        then the tables."""
        cluster_facts = self.facts.get("cluster", {}) if isinstance(self.facts, dict) else {}
        cluster_config = self.config.get("cluster", {})
        n_components = cluster_facts.get("n_components", cluster_config.get("n_components"))
        n_clusters = cluster_facts.get("n_clusters", cluster_config.get("n_clusters"))
        clusters = self.table("clusters")
        if clusters is not None:
            n_clusters = len(clusters)
        return (int(n_components) if isinstance(n_components, (int, float)) else None,
                int(n_clusters) if isinstance(n_clusters, (int, float)) else None)


def run_table(
    spark: SparkSession, database: str, name: str, run_id: str
) -> DataFrame | None:
    """This run's rows of `name` without run_id, or None when the table is absent."""
    if not table_exists(spark, database, name):
        return None
    return read_run_table(spark, database, name, run_id).drop("run_id")


def collect(df: DataFrame | None) -> pd.DataFrame | None:
    """`df` in pandas, or None when it is None or has no rows."""
    if df is None:
        return None
    frame = to_pandas(df)
    return None if frame.empty else frame


SUCCESS_DETAILS = ("n_labelled", "success_rate_low", "success_rate_high")


def with_success_rates(clusters: pd.DataFrame | None,
                       success: pd.DataFrame | None) -> pd.DataFrame | None:
    """`clusters` with `success_rate` taken from `cluster_success` where it is missing (runs
    written before `clusters` carried it), and the labelled count and Wilson bounds of the
    rate where `cluster_success` has them."""
    if clusters is None or success is None:
        return clusters
    by_id = success.set_index("cluster_id")
    rates = clusters["cluster_id"].map(by_id["success_rate"])
    details = {c: clusters["cluster_id"].map(by_id[c]) for c in SUCCESS_DETAILS
               if c in by_id and c not in clusters}
    if "success_rate" not in clusters:
        return clusters.assign(success_rate=rates, **details)
    return clusters.assign(success_rate=clusters["success_rate"].fillna(rates), **details)


def few_labels(n_labelled: Any, minimum: int) -> bool:
    """Whether a cluster's success rate rests on fewer than `minimum` labelled queries (False
    where the count is unknown: runs written before `cluster_success` had it)."""
    return n_labelled is not None and not pd.isna(n_labelled) and int(n_labelled) < minimum


def sample_rows(df: DataFrame, n: int, seed: int, total: int | None = None) -> DataFrame:
    """About `n` random rows of `df` (all when it is smaller; `total` bounds its row count)."""
    total = df.count() if total is None else total
    if total <= n:
        return df
    return df.sample(fraction=min(1.0, 1.2 * n / total), seed=seed).limit(n)


def parse_manifest(row: dict[str, Any]) -> dict[str, Any]:
    """The `runs` row with its JSON columns decoded (config, versions, timings, counts, facts)."""
    manifest = {k: v for k, v in row.items() if k not in MANIFEST_FIELDS}
    for key in MANIFEST_FIELDS:
        raw = row.get(key)
        manifest[key.removesuffix("_json")] = json.loads(raw) if raw else {}
    return manifest


def read_manifest(spark: SparkSession, database: str, run_id: str) -> dict[str, Any]:
    """This run's manifest from `runs`, or an empty manifest when it was never recorded."""
    runs = run_table(spark, database, "runs", run_id)
    if runs is None:
        return {"status": "unknown", **{k.removesuffix("_json"): {} for k in MANIFEST_FIELDS}}
    row = runs.orderBy(F.col("finished_at").desc()).first()
    if row is None:
        return {"status": "unknown", **{k.removesuffix("_json"): {} for k in MANIFEST_FIELDS}}
    return parse_manifest(row.asDict())


def load_report_data(
    spark: SparkSession,
    database: str,
    run_id: str,
    manifest: dict[str, Any] | None = None,
    *,
    n_failing: int = 5,
    n_recommendations: int = 3,
    knife_sample: int = 20_000,
    eval_sample: int = 200_000,
    map_sample: int = 3_000,
    seed: int = 42,
) -> ReportData:
    """Read `run_id`'s tables: small ones whole, per-query ones aggregated or sampled in Spark."""
    data = ReportData(run_id, database, manifest or read_manifest(spark, database, run_id))
    frames = {name: run_table(spark, database, name, run_id) for name in (
        *SMALL_TABLES, "queries", "cluster_assignments", "success_labels",
        "success_predictions", "recommendations")}
    for name in SMALL_TABLES:
        data.tables[name] = collect(frames[name])
    data.tables["clusters"] = with_success_rates(data.tables["clusters"],
                                                 data.tables["cluster_success"])
    queries, assignments = frames["queries"], frames["cluster_assignments"]
    labels, predictions = frames["success_labels"], frames["success_predictions"]
    total = None
    if queries is not None:
        row = queries.agg(F.count("*").alias("queries"),
                          F.sum("n_searches").alias("searches")).first()
        if row is not None and row["queries"]:
            total = int(row["queries"])
            data.totals = {"queries": float(total), "searches": float(row["searches"] or 0)}
        else:
            queries = None
    if assignments is not None:
        data.knife = collect(sample_rows(
            assignments.select("cluster_id", "silhouette_sqeuclidean"), knife_sample, seed, total))
        assignments = None if data.knife is None else assignments
    if assignments is not None and labels is not None:
        data.tables["failing_by_cluster"] = collect(
            failing_by_cluster(assignments, labels, queries))
        labels = None if data.tables["failing_by_cluster"] is None else labels
    if assignments is not None and labels is not None and queries is not None:
        data.failing = worst_failing(assignments, labels, queries, n_failing)
        recs = frames["recommendations"]
        if recs is not None and not recs.isEmpty():
            data.recommendations = recommendations_for(recs, data.failing, n_recommendations)
    if labels is not None and predictions is not None:
        data.evaluation, data.evaluation_note = evaluation_frame(
            spark, labels, predictions, assignments, frames["cluster_success"], eval_sample, seed,
            total)
    if assignments is not None:
        data.embeddings, data.embeddings_note = embedding_sample(
            spark, database, data.facts, assignments, map_sample, seed, total)
    return data


def failing_by_cluster(
    assignments: DataFrame, labels: DataFrame, queries: DataFrame | None
) -> DataFrame:
    """Per cluster: labelled queries, failing queries and (when known) their searches."""
    joined = assignments.select("query_key", "cluster_id").join(
        labels.select("query_key", "success"), "query_key")
    failed = ~F.col("success").cast("boolean")
    aggs = [F.count("success").alias("labelled"),
            F.sum(failed.cast("long")).alias("failing_queries")]
    if queries is not None:
        joined = joined.join(queries.select("query_key", "n_searches"), "query_key", "left")
        aggs.append(F.sum(F.when(failed, F.col("n_searches")).otherwise(0))
                    .alias("failing_searches"))
    return joined.groupBy("cluster_id").agg(*aggs)


def worst_failing(
    assignments: DataFrame, labels: DataFrame, queries: DataFrame, n: int
) -> pd.DataFrame:
    """The `n` most searched failing queries of each cluster."""
    label_cols = ["query_key", "success"] + [
        c for c in ("success_score", "support", "low_support") if c in labels.columns]
    rows = (
        assignments.select("query_key", "cluster_id")
        .join(labels.select(*label_cols), "query_key")
        .where(~F.col("success").cast("boolean"))
        .join(queries.select("query_key", "query", "n_searches"), "query_key")
    )
    if "low_support" in rows.columns:
        rows = rows.where(~F.coalesce(F.col("low_support").cast("boolean"), F.lit(False)))
    order = Window.partitionBy("cluster_id").orderBy(F.col("n_searches").desc(), "query_key")
    top = rows.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= n)
    return to_pandas(top).sort_values(["cluster_id", "rank"]).reset_index(drop=True)


def recommendations_for(
    recommendations: DataFrame, failing: pd.DataFrame, n: int
) -> pd.DataFrame:
    """The first `n` recommendations of each query in `failing`."""
    if failing.empty:
        return failing.iloc[0:0]
    keys = recommendations.sparkSession.createDataFrame(
        failing[["query_key"]].drop_duplicates())
    useful = recommendations.where((F.col("rank") <= n) & F.col("rec_query").isNotNull())
    frame = to_pandas(useful.join(keys, "query_key"))
    return frame.sort_values(["query_key", "rank"]).reset_index(drop=True)


def evaluation_frame(
    spark: SparkSession,
    labels: DataFrame,
    predictions: DataFrame,
    assignments: DataFrame | None,
    cluster_success: DataFrame | None,
    n: int,
    seed: int,
    total: int | None = None,
) -> tuple[pd.DataFrame | None, str]:
    """Per-query (success, p_success[, cluster_rate]) for ROC and calibration, plus a note."""
    frame = labels.where(F.col("success").isNotNull()).join(
        predictions.select("query_key", "p_success"), "query_key")
    notes = []
    if "low_support" in frame.columns:
        frame = frame.where(~F.coalesce(F.col("low_support").cast("boolean"), F.lit(False)))
        notes.append("queries with low support excluded")
    split_col = "split" if "split" in frame.columns else None
    if split_col and not frame.where(F.col(split_col) == "test").isEmpty():
        frame = frame.where(F.col(split_col) == "test")
        notes.append("test split only")
    elif not split_col:
        notes.append("all labelled queries (the tables hold no split column)")
    cols = [F.col("success").cast("int").alias("success"), F.col("p_success").cast("double")]
    if assignments is not None and cluster_success is not None:
        frame = frame.drop("cluster_id").join(
            assignments.select("query_key", "cluster_id"), "query_key").join(
            cluster_success.select("cluster_id", F.col("success_rate").alias("cluster_rate")),
            "cluster_id")
        cols.append(F.col("cluster_rate").cast("double"))
    return collect(sample_rows(frame.select(*cols), n, seed, total)), "; ".join(notes)


def embedding_sample(
    spark: SparkSession,
    database: str,
    facts: dict[str, Any],
    assignments: DataFrame,
    n: int,
    seed: int,
    total: int | None = None,
) -> tuple[pd.DataFrame | None, str]:
    """A sample of this run's embeddings with their cluster ids, or None and why not."""
    if not table_exists(spark, database, "query_embeddings"):
        return None, "the query_embeddings cache is not in the catalog"
    cache = spark.table(qualified(database, "query_embeddings"))
    embed = facts.get("embed", {}) if isinstance(facts, dict) else {}
    if "model_id" in embed:
        cache = cache.where(F.col("model_id") == embed["model_id"])
        if "model_revision" in embed:
            cache = cache.where(F.col("model_revision") == embed["model_revision"])
    else:
        models = cache.select("model_id", "model_revision").distinct().collect()
        if len(models) != 1:
            return None, ("the run manifest names no embedding model and the cache holds "
                          f"{len(models)} models")
        log.info("report: using the only cached embedding model %s", models[0]["model_id"])
    joined = assignments.select("query_key", "cluster_id").join(
        cache.select("query_key", "embedding").dropDuplicates(["query_key"]), "query_key")
    sample = collect(sample_rows(joined, n, seed, total))
    if sample is None:
        return None, "no cached embeddings match this run's queries"
    return sample.sort_values("query_key").reset_index(drop=True), ""


def manifest_of(run: Any, status: str = "running") -> dict[str, Any]:
    """A decoded manifest for a `Run` still in progress (its `runs` row is not written yet)."""
    from querylens.runtime.config import to_dict
    from querylens.runtime.runs import versions

    row = {
        "status": status, "started_at": run.started_at, "finished_at": None,
        "config_json": json.dumps(to_dict(run.config), default=str),
        "versions_json": json.dumps(versions()),
        "timings_json": json.dumps(run.timings), "counts_json": json.dumps(run.counts),
        "facts_json": json.dumps(run.facts, default=str),
    }
    return parse_manifest(row)
