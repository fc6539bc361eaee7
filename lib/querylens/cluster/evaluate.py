"""External validation of a clustering against reference classes of (query, class):
`evaluate.labels`, else the demo generator's `demo_ground_truth.true_category`."""

from __future__ import annotations

import logging
from typing import cast

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
)

from querylens.ingest.normalize import normalize_column, query_key
from querylens.runtime.config import CSV_DEFAULTS, Config
from querylens.runtime.errors import DataError
from querylens.runtime.tables import qualified, table_exists

log = logging.getLogger("querylens")

DEMO_TRUTH = "demo_ground_truth"
EXTERNAL_METRICS = ("ami", "nmi", "ari", "purity", "inverse_purity")


def purity(classes: np.ndarray, clusters: np.ndarray) -> float:
    """Share of rows in their cluster's most frequent class (1 when each cluster is pure)."""
    if not len(classes):
        return float("nan")
    table = pd.crosstab(pd.Series(clusters, name="c"), pd.Series(classes, name="t"))
    return float(table.to_numpy().max(1).sum() / len(classes))


def inverse_purity(classes: np.ndarray, clusters: np.ndarray) -> float:
    """Share of rows in their class's most frequent cluster (1 when no class is split)."""
    return purity(clusters, classes)


def external_scores(classes: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """AMI, NMI and ARI (sklearn) and purity and inverse purity of `clusters` against
    `classes`, over the same rows."""
    return {"ami": float(adjusted_mutual_info_score(classes, clusters)),
            "nmi": float(normalized_mutual_info_score(classes, clusters)),
            "ari": float(adjusted_rand_score(classes, clusters)),
            "purity": purity(classes, clusters),
            "inverse_purity": inverse_purity(classes, clusters)}


def scores_from_counts(counts: pd.DataFrame) -> dict[str, float]:
    """`external_scores` from a contingency table in long form (cluster_id, class, n), plus
    `labelled_rows` and `label_classes`."""
    n = counts["n"].to_numpy(np.int64)
    clusters = np.repeat(counts["cluster_id"].to_numpy(), n)
    classes = np.repeat(counts["class"].astype(str).to_numpy(), n)
    scores = external_scores(classes, clusters) if len(classes) else {}
    return {**scores, "labelled_rows": float(n.sum()),
            "label_classes": float(counts["class"].nunique())}


def is_csv_path(source: str) -> bool:
    """`evaluate.labels` names a CSV file or folder when it ends in .csv or holds a `/`."""
    return source.lower().endswith(".csv") or "/" in source


def reference_labels(spark: SparkSession, config: Config) -> tuple[DataFrame | None, str]:
    """(query_key, class), one class per query (the most frequent, ties by name), and where it
    came from; (None, reason) when there is nothing to validate against."""
    e = config.evaluate
    if e.labels:
        if is_csv_path(e.labels):
            raw = spark.read.options(**CSV_DEFAULTS).csv(e.labels)
        else:
            name = e.labels if "." in e.labels else qualified(config.run.database, e.labels)
            raw = spark.table(name)
        missing = [c for c in (e.query_column, e.class_column) if c not in raw.columns]
        if missing:
            raise DataError(f"evaluate.labels {e.labels} has no column {missing[0]!r} (columns: "
                            f"{', '.join(raw.columns)}; set evaluate.query_column / "
                            f"evaluate.class_column)")
        text = normalize_column(F.col(e.query_column).cast("string"), config.normalize)
        pairs = raw.select(query_key(text).alias("query_key"),
                           F.col(e.class_column).cast("string").alias("class"))
        source = e.labels
    elif table_exists(spark, config.run.database, DEMO_TRUTH):
        pairs = spark.table(qualified(config.run.database, DEMO_TRUTH)).select(
            "query_key", F.col("true_category").alias("class"))
        source = f"{DEMO_TRUTH}.true_category"
    else:
        return None, "no evaluate.labels and no demo ground truth"
    counted = pairs.where(F.col("query_key").isNotNull() & F.col("class").isNotNull()).groupBy(
        "query_key", "class").count()
    best = Window.partitionBy("query_key").orderBy(F.desc("count"), F.asc("class"))
    labels = counted.withColumn("_r", F.row_number().over(best)).where("_r = 1").select(
        "query_key", "class")
    return labels, source


def external_metrics(assigned: DataFrame, labels: DataFrame) -> dict[str, float]:
    """`scores_from_counts` of `assigned` (query_key, cluster_id) against `labels`, with the
    contingency table counted in Spark; `label_coverage` is the labelled share of rows."""
    joined = assigned.select("query_key", "cluster_id").join(labels, "query_key", "left")
    counts = cast(pd.DataFrame, joined.groupBy("cluster_id", "class").agg(
        F.count("*").alias("n")).toPandas())
    total = float(counts["n"].sum())
    known = counts.dropna(subset=["class"])
    if known.empty:
        return {"labelled_rows": 0.0, "label_coverage": 0.0}
    scores = scores_from_counts(known)
    return {**scores, "label_coverage": scores["labelled_rows"] / total if total else 0.0}


def classes_of(spark: SparkSession, keys: pd.Series, labels: DataFrame) -> np.ndarray:
    """The class of each of `keys` (None where unlabelled), in order."""
    frame = spark.createDataFrame(pd.DataFrame({"query_key": keys.astype(str).to_numpy()}),
                                  "query_key string")
    found = cast(pd.DataFrame, frame.join(labels, "query_key").toPandas())
    lookup = dict(zip(found["query_key"], found["class"], strict=True))
    return np.array([lookup.get(k) for k in keys], dtype=object)
