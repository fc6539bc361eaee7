"""Evaluation against the demo ground truth (true category and latent success probability)."""

from __future__ import annotations

import logging
from typing import cast

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from scipy.stats import spearmanr

from querylens.runtime.errors import DataError
from querylens.runtime.tables import table_exists

log = logging.getLogger("querylens")

GROUND_TRUTH_TABLE = "demo_ground_truth"
Row = tuple[str, str, str, float]


def ground_truth(spark: SparkSession, database: str) -> DataFrame | None:
    """Per query_key: mean true p_success and the most frequent true category; None when the
    table is absent (real logs)."""
    if not table_exists(spark, database, GROUND_TRUTH_TABLE):
        return None
    raw = spark.table(f"{database}.{GROUND_TRUTH_TABLE}")
    missing = [c for c in ("query_key", "true_category", "p_success") if c not in raw.columns]
    if missing:
        raise DataError(f"{database}.{GROUND_TRUTH_TABLE} lacks column {missing[0]}")
    p = raw.groupBy("query_key").agg(F.avg("p_success").alias("true_p"))
    counted = raw.where(F.col("true_category").isNotNull()).groupBy(
        "query_key", "true_category").count()
    best = Window.partitionBy("query_key").orderBy(F.desc("count"), F.asc("true_category"))
    category = counted.withColumn("r", F.row_number().over(best)).where("r = 1").select(
        "query_key", "true_category")
    return p.join(category, "query_key", "left")


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation, None when undefined (fewer than 3 rows or a constant)."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def evaluate_scores(frame: pd.DataFrame, model: str, split: str, column: str) -> list[Row]:
    """Spearman correlation of `column` with the true success probability."""
    frame = frame.dropna(subset=[column, "true_p"])
    rho = spearman(frame[column].to_numpy(float), frame["true_p"].to_numpy(float))
    return [] if rho is None else [(model, split, "spearman_true_p", rho)]


def evaluate_recommendations(recs: DataFrame, truth: DataFrame) -> tuple[list[Row], list[str]]:
    """Same-true-category share of recommendations (all, from the query's own cluster, from
    another cluster) and the true success probability of recommended vs failing queries (per
    failing query with at least one recommendation)."""
    rec = recs.where(F.col("rec_query_key").isNotNull()).select(
        "query_key", "rec_query_key",
        F.coalesce(F.col("cluster_id") == F.col("rec_cluster_id"), F.lit(False)).alias("own"))
    t = truth.select("query_key", "true_p", "true_category")
    r = truth.select(F.col("query_key").alias("rec_query_key"), F.col("true_p").alias("rec_p"),
                     F.col("true_category").alias("rec_category"))
    pairs = cast(pd.DataFrame,
                 rec.join(t, "query_key", "left").join(r, "rec_query_key", "left").toPandas())
    if pairs.empty:
        return [], ["no recommendations to evaluate against the ground truth"]
    known = pairs.dropna(subset=["true_category", "rec_category"])
    rows: list[Row] = [("recommendations", "demo_truth", "pairs", float(len(pairs)))]
    notes: list[str] = []
    if len(known):
        same = known["true_category"] == known["rec_category"]
        rows += [("recommendations", "demo_truth", "same_category_share", float(same.mean())),
                 ("recommendations", "demo_truth", "pairs_with_category", float(len(known)))]
        for own, where in ((True, "own_cluster"), (False, "other_cluster")):
            picked = same[known["own"] == own]
            rows.append(("recommendations", "demo_truth", f"pairs_{where}", float(len(picked))))
            if len(picked):
                rows.append(("recommendations", "demo_truth", f"same_category_share_{where}",
                             float(picked.mean())))
    else:
        notes.append("no recommendation pair has a known true category on both sides")
    with_p = pairs.dropna(subset=["true_p", "rec_p"])
    if len(with_p):
        per_query = with_p.groupby("query_key").agg(true_p=("true_p", "first"),
                                                    rec_p=("rec_p", "mean"))
        failing, recommended = float(per_query["true_p"].mean()), float(per_query["rec_p"].mean())
        rows += [("recommendations", "demo_truth", "failing_true_p", failing),
                 ("recommendations", "demo_truth", "recommended_true_p", recommended)]
        if failing > 0:
            rows.append(("recommendations", "demo_truth", "true_p_ratio", recommended / failing))
    else:
        notes.append("no recommendation pair has a true success probability on both sides")
    return rows, notes
