"""The recommend stage: recommendations for failing or predicted-failing queries from the
successful clusters, IVF recall against exact search, and the demo evaluation."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.embed.stage import run_embeddings
from querylens.recommend.index import SCHEMA, build_index, recall_at_n, recommend_df
from querylens.runtime.arrays import normalize_rows, stack_rows, to_pandas
from querylens.runtime.runs import Run
from querylens.runtime.stages import Stage, without_interactions
from querylens.success import evaluate

log = logging.getLogger("querylens")

Row = tuple[str, str, str, float]


def recommend_stage(run: Run) -> None:
    """Labels, predictions, embeddings -> `recommendations` (+ recall, demo evaluation)."""
    cfg = run.config.recommend
    embeddings = run_embeddings(run)
    facts: dict[str, Any] = {"notes": []}
    run.facts["recommend"] = facts
    labels = run.read("success_labels")
    queries = run.read("queries").select("query_key", "query")
    if run.has_rows("success_predictions"):
        preds = run.read("success_predictions").select("query_key", "p_success")
    else:
        preds = labels.select("query_key", F.lit(None).cast("double").alias("p_success"))
        facts["notes"].append("no success_predictions this run: failing means labelled failure")
    frame = labels.select("query_key", "cluster_id", "success", "smoothed_score", "support").join(
        preds, "query_key", "left").join(queries, "query_key")
    predicted_fail = F.coalesce(F.col("p_success") < cfg.predicted_fail_below, F.lit(False))
    failing = frame.where((F.col("success") == F.lit(False)) | predicted_fail)
    min_support = max(cfg.min_support, run.config.success.min_support)
    candidates = frame.where(
        (F.col("success") == F.lit(True)) & (F.col("support") >= min_support) & ~predicted_fail)
    rates = {int(r["cluster_id"]): float(r["success_rate"])
             for r in run.read("cluster_success").collect() if r["success_rate"] is not None}
    cents = centroids(embeddings, labels)
    index = build_index(cents, rates, to_pandas(candidates.join(embeddings, "query_key")), cfg)
    facts.update({"successful_clusters": sorted(index.clusters),
                  "candidates": int(sum(len(c.keys) for c in index.clusters.values())),
                  "ivf_clusters": sorted(k for k, c in index.clusters.items() if c.ivf)})
    rows: list[Row] = []
    if not index.clusters:
        reason = (f"no successful cluster: none has success rate >= "
                  f"{cfg.min_cluster_success_rate} and a labelled successful query with support "
                  f">= {min_support}; recommendations are empty")
        log.warning("recommend: %s", reason)
        facts["notes"].append(reason)
        run.write("recommendations", run.spark.createDataFrame([], SCHEMA))
        run.write_metrics([("recommendations", "all", "failing_queries",
                          float(failing.count()))])
        return
    with_emb = failing.join(embeddings, "query_key")
    recs, shared = recommend_df(with_emb, index, cfg)
    run.write("recommendations", recs)
    shared.destroy()
    written = run.read("recommendations")
    summary = written.agg(F.countDistinct("query_key").alias("failing"),
                          F.count("rec_query_key").alias("recs"),
                          F.countDistinct(F.when(F.col("rec_query_key").isNotNull(),
                                                 F.col("query_key"))).alias("served")).first()
    assert summary is not None
    rows += [("recommendations", "all", "failing_queries", float(summary["failing"])),
             ("recommendations", "all", "recommendations", float(summary["recs"])),
             ("recommendations", "all", "queries_with_recommendations", float(summary["served"]))]
    rows += recall_rows(with_emb, index, cfg.n_recommendations, cfg.recall_sample, cfg.seed,
                        facts)
    truth = evaluate.ground_truth(run.spark, run.database)
    if truth is None:
        facts["notes"].append(f"no {evaluate.GROUND_TRUTH_TABLE} table: evaluation skipped")
    else:
        new_rows, notes = evaluate.evaluate_recommendations(written, truth)
        rows += new_rows
        facts["notes"] += notes
    run.write_metrics(rows)


def centroids(embeddings: DataFrame, labels: DataFrame) -> pd.DataFrame:
    """Mean embedding of each cluster (Spark's Summarizer), as cluster_id, centroid."""
    joined = embeddings.join(labels.select("query_key", "cluster_id"), "query_key").where(
        F.col("cluster_id").isNotNull())
    means = joined.groupBy("cluster_id").agg(
        Summarizer.mean(array_to_vector(F.col("embedding"))).alias("mean"))
    return to_pandas(means.select(
        "cluster_id", vector_to_array(F.col("mean"), "float32").alias("centroid")))


def recall_rows(failing: DataFrame, index: Any, n: int, sample: int, seed: int,
                facts: dict[str, Any]) -> list[Row]:
    """IVF recall@n against exact search on a sample of failing queries (driver-side)."""
    if not any(c.ivf is not None for c in index.clusters.values()):
        facts["notes"].append("every successful cluster is searched exactly (recall 1)")
        return []
    picked = to_pandas(failing.select("cluster_id", "embedding").orderBy(
        F.xxhash64("query_key", F.lit(seed))).limit(sample))
    own = picked["cluster_id"].fillna(-1).to_numpy(dtype=np.int64)
    recall, counted = recall_at_n(normalize_rows(stack_rows(picked["embedding"])), own, index, n)
    if recall is None:
        facts["notes"].append("no sampled failing query targets an IVF-searched cluster")
        return []
    return [("recommend_ivf", "sample", f"recall_at_{n}", recall),
            ("recommend_ivf", "sample", "queries", float(counted))]


RECOMMEND = Stage("recommend", recommend_stage,
                  reads=("queries", "success_labels", "cluster_success", "query_embeddings"),
                  writes=("recommendations", "model_metrics"),
                  uses=("success_predictions", "demo_ground_truth"), skip=without_interactions)
