"""The `success` and `recommend` stages: read this run's tables, write labels, predictions,
metrics and recommendations."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.config import SuccessConfig
from querylens.runs import Run
from querylens.success import evaluate, metrics
from querylens.success.labels import cluster_success, label_queries
from querylens.success.model import SuccessMLP, score_column
from querylens.success.recommend import SCHEMA, build_index, recall_at_n, recommend_df, stack
from querylens.tables import read_run_table, table_exists

log = logging.getLogger("querylens")

Row = tuple[str, str, str, float]


def run_table(run: Run, table: str) -> DataFrame:
    return read_run_table(run.spark, run.database, table, run.run_id).drop("run_id")


def pandas(df: DataFrame) -> pd.DataFrame:
    """`df.toPandas()`, typed."""
    return cast(pd.DataFrame, df.toPandas())


def with_matrix(df: DataFrame, column: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Collect `df` through Arrow: its other columns as pandas and the array column `column`
    as one float32 matrix (no Python object per row)."""
    table = df.toArrow()
    values = table.column(column).combine_chunks()
    if values.null_count:
        raise ValueError(f"column {column} holds {values.null_count} null arrays")
    lengths = values.value_lengths().to_numpy()
    if len(lengths) and lengths.min() != lengths.max():
        raise ValueError(f"column {column} holds arrays of different lengths")
    dim = int(lengths[0]) if len(lengths) else 0
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table.drop_columns([column]).to_pandas(), flat.reshape(len(table), dim)


def has_run_rows(run: Run, table: str) -> bool:
    return table_exists(run.spark, run.database, table) and bool(
        read_run_table(run.spark, run.database, table, run.run_id).limit(1).count())


def with_split(df: DataFrame, config: SuccessConfig) -> DataFrame:
    """A `split` column (train/validation/test) from a seeded hash of query_key."""
    u = (F.abs(F.xxhash64("query_key", F.lit(config.seed))) % 1_000_000) / 1_000_000.0
    return df.withColumn("split", F.when(u < config.test_fraction, "test")
                         .when(u < config.test_fraction + config.validation_fraction, "validation")
                         .otherwise("train"))


def success_stage(run: Run, embeddings: DataFrame) -> None:
    """Labels, cluster success rates, the model, its baselines and metrics, predictions."""
    cfg = run.config.success
    cached, stats = label_queries(run_table(run, "queries"), run_table(run, "cluster_assignments"),
                                  cfg)
    try:
        train_and_score(run, with_split(cached, cfg), stats, embeddings)
    finally:
        cached.unpersist()


def train_and_score(run: Run, labels: DataFrame, stats: Any, embeddings: DataFrame) -> None:
    """Write labels and cluster rates; unless the labels cannot train one, fit and score."""
    cfg = run.config.success
    run.write("success_labels", labels)
    run.write("cluster_success", cluster_success(labels))
    fill_cluster_success_rates(run)
    facts: dict[str, Any] = {"labels": asdict(stats), "notes": []}
    run.facts["success"] = facts
    rows: list[Row] = label_rows(stats)
    truth = evaluate.ground_truth(run.spark, run.database)
    if stats.problem:
        facts["model"] = f"skipped: {stats.problem}"
        run.add_metrics(rows)
        return
    data, vectors = with_matrix(labels.where(F.col("success").isNotNull()).join(
        embeddings, "query_key").select(
        "query_key", "cluster_id", "split", F.col("success").cast("int").alias("y"), "embedding",
    ), "embedding")
    problem = split_problem(data)
    if problem:
        facts["model"] = f"skipped: {problem}"
        log.warning("success model: %s", problem)
        run.add_metrics(rows)
        return
    masks = {s: (data["split"] == s).to_numpy() for s in ("train", "validation", "test")}
    parts = {s: data[mask] for s, mask in masks.items()}
    y = {s: part["y"].to_numpy() for s, part in parts.items()}
    train_clusters = parts["train"]["cluster_id"].to_numpy()
    rates = metrics.cluster_rates(train_clusters, y["train"])
    global_rate = metrics.majority_probability(y["train"])
    x = {s: model_inputs(vectors[mask], parts[s]["cluster_id"].to_numpy(), rates, global_rate,
                         cfg.cluster_features) for s, mask in masks.items()}
    del vectors
    start = time.perf_counter()
    model = success_model(cfg, len(x["train"])).fit(
        x["train"], y["train"], x["validation"], y["validation"])
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    logistic = metrics.logistic_regression(cfg.seed).fit(x["train"], y["train"])
    logistic_seconds = time.perf_counter() - start
    predictions = {
        "nn": lambda s: model.predict_proba(x[s])[:, 1],
        "logistic_regression": lambda s: logistic.predict_proba(x[s])[:, 1],
        "cluster_rate": lambda s: metrics.cluster_rate_predictions(
            parts[s]["cluster_id"].to_numpy(), rates, global_rate),
        "majority": lambda s: np.full(len(y[s]), global_rate),
    }
    calibration = []
    for name, predict in predictions.items():
        for split in ("validation", "test"):
            p = predict(split)
            new_rows, notes = metrics.binary_metrics(name, split, y[split], p)
            rows += new_rows
            facts["notes"] += notes
            if split == "test":
                table = metrics.calibration_table(name, split, y[split], p, cfg.calibration_bins)
                rows.append((name, split, "ece", metrics.expected_calibration_error(table)))
                calibration.append(table)
    rows += [("nn", "train", "best_epoch", float(model.best_epoch_)),
             ("nn", "train", "epochs", float(len(model.history_))),
             ("nn", "train", "seconds", train_seconds),
             ("logistic_regression", "train", "seconds", logistic_seconds)]
    folder = Path(cfg.model_dir or Path(run.config.run.output_dir) / "models" / "success")
    features = ["embedding"] + (["cluster_success_rate"] if cfg.cluster_features else [])
    saved = model.save(folder, {"run_id": run.run_id, "features": features,
                                "threshold": stats.threshold})
    facts.update({"model": model.version_, "model_path": str(saved), "backend": model.backend,
                  "world_size": model.world_size_, "best_epoch": model.best_epoch_,
                  "train_seconds": round(train_seconds, 2),
                  "split_sizes": {s: int(len(v)) for s, v in y.items()}})
    run.write("success_calibration", run.spark.createDataFrame(pd.concat(calibration)))
    scored = score_queries(run, labels, embeddings, model, rates, global_rate)
    run.write("success_predictions", scored)
    if truth is not None:
        rows += truth_rows(run, truth)
    run.add_metrics(rows)


def model_inputs(vectors: np.ndarray, clusters: np.ndarray, rates: dict[int, float],
                 global_rate: float, cluster_features: bool) -> np.ndarray:
    """The model's inputs: the embeddings, plus the cluster's training success rate."""
    if not cluster_features:
        return vectors
    rate = metrics.cluster_rate_predictions(clusters, rates, global_rate)
    return np.column_stack([vectors, rate.astype(np.float32)])


def success_model(cfg: SuccessConfig, n_train: int) -> SuccessMLP:
    """An unfitted SuccessMLP from the config; `auto` picks TorchDistributor from
    `distributor_min_rows` training rows."""
    backend = cfg.backend
    if backend == "auto":
        backend = "distributor" if n_train >= cfg.distributor_min_rows else "driver"
    return SuccessMLP(
        hidden_sizes=tuple(cfg.hidden_sizes), dropout=cfg.dropout,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size, max_epochs=cfg.max_epochs, patience=cfg.patience,
        backend=backend, num_processes=cfg.num_processes, random_state=cfg.seed)


def fill_cluster_success_rates(run: Run) -> None:
    """Rewrite this run's `clusters` rows with `success_rate` from `cluster_success`."""
    if not has_run_rows(run, "clusters"):
        return
    rates = run_table(run, "cluster_success").select("cluster_id", "success_rate")
    clusters = run_table(run, "clusters").drop("success_rate").join(rates, "cluster_id", "left")
    run.write("clusters", clusters.localCheckpoint())


def label_rows(stats: Any) -> list[Row]:
    rows: list[Row] = [("labels", "all", "queries", float(stats.queries)),
                       ("labels", "all", "labelled", float(stats.labelled)),
                       ("labels", "all", "successful", float(stats.successful)),
                       ("labels", "all", "low_support", float(stats.low_support))]
    if stats.threshold is not None:
        rows.append(("labels", "all", "threshold", float(stats.threshold)))
    return rows


def split_problem(data: pd.DataFrame) -> str | None:
    """Why the labelled queries cannot be split into train/validation/test, else None."""
    sizes = data.groupby("split")["y"].agg(["count", "nunique"])
    for split in ("train", "validation", "test"):
        if split not in sizes.index:
            return (f"no labelled query falls in the {split} split ({len(data)} labelled "
                    "queries with embeddings); label more queries or change the fractions")
    if sizes.loc["train", "nunique"] < 2:
        return "the train split holds a single class; a success model needs both"
    return None


def score_queries(run: Run, labels: DataFrame, embeddings: DataFrame, model: SuccessMLP,
                  rates: dict[int, float], global_rate: float) -> DataFrame:
    """`success_predictions`: P(success) for every embedded query, scored in a pandas UDF."""
    cfg = run.config.success
    rate_df = run.spark.createDataFrame(
        [(int(k), float(v)) for k, v in rates.items()],
        "cluster_id int, cluster_success_rate double")
    base = labels.select("query_key", "cluster_id", "split", "success").join(
        embeddings, "query_key").join(F.broadcast(rate_df), "cluster_id", "left").withColumn(
        "cluster_success_rate", F.coalesce("cluster_success_rate", F.lit(global_rate)))
    extra = [F.col("cluster_success_rate")] if cfg.cluster_features else []
    p = score_column(model, F.col("embedding"), *extra, batch_size=cfg.scoring_batch_size)
    return base.select(
        "query_key", "cluster_id", "split", "success", p.alias("p_success"),
        F.lit(model.version_).alias("model_version"),
    )


def truth_rows(run: Run, truth: DataFrame) -> list[Row]:
    """Spearman correlation of the smoothed score and of P(success) with the true p_success."""
    frame = pandas(run_table(run, "success_labels").select(
        "query_key", "smoothed_score", "split").join(
        run_table(run, "success_predictions").select("query_key", "p_success"), "query_key",
        "left").join(truth.select("query_key", "true_p"), "query_key"))
    rows = evaluate.evaluate_scores(frame, "labels", "demo_truth", "smoothed_score")
    rows += evaluate.evaluate_scores(frame[frame["split"] == "test"], "nn", "demo_truth",
                                     "p_success")
    return rows


def recommend_stage(run: Run, embeddings: DataFrame) -> None:
    """`recommendations` for failing or predicted-failing queries, recall, evaluation."""
    cfg = run.config.recommend
    facts: dict[str, Any] = {"notes": []}
    run.facts["recommend"] = facts
    labels = run_table(run, "success_labels")
    queries = run_table(run, "queries").select("query_key", "query")
    if has_run_rows(run, "success_predictions"):
        preds = run_table(run, "success_predictions").select("query_key", "p_success")
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
             for r in run_table(run, "cluster_success").collect() if r["success_rate"] is not None}
    cents = centroids(embeddings, labels)
    index = build_index(cents, rates, pandas(candidates.join(embeddings, "query_key")), cfg)
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
        run.add_metrics([("recommendations", "all", "failing_queries",
                          float(failing.count()))])
        return
    with_emb = failing.join(embeddings, "query_key")
    recs, shared = recommend_df(run.spark, with_emb, index, cfg)
    run.write("recommendations", recs)
    shared.destroy()
    written = run_table(run, "recommendations")
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
    run.add_metrics(rows)


def centroids(embeddings: DataFrame, labels: DataFrame) -> pd.DataFrame:
    """Mean embedding of each cluster (Spark's Summarizer), as cluster_id, centroid."""
    joined = embeddings.join(labels.select("query_key", "cluster_id"), "query_key").where(
        F.col("cluster_id").isNotNull())
    means = joined.groupBy("cluster_id").agg(
        Summarizer.mean(array_to_vector(F.col("embedding"))).alias("mean"))
    return pandas(means.select(
        "cluster_id", vector_to_array(F.col("mean"), "float32").alias("centroid")))


def recall_rows(failing: DataFrame, index: Any, n: int, sample: int, seed: int,
                facts: dict[str, Any]) -> list[Row]:
    """IVF recall@n against exact search on a sample of failing queries (driver-side)."""
    if not any(c.ivf is not None for c in index.clusters.values()):
        facts["notes"].append("every successful cluster is searched exactly (recall 1)")
        return []
    picked = pandas(failing.select("cluster_id", "embedding").orderBy(
        F.xxhash64("query_key", F.lit(seed))).limit(sample))
    own = picked["cluster_id"].fillna(-1).to_numpy(dtype=np.int64)
    recall, counted = recall_at_n(stack(picked["embedding"]), own, index, n)
    if recall is None:
        facts["notes"].append("no sampled failing query targets an IVF-searched cluster")
        return []
    return [("recommend_ivf", "sample", f"recall_at_{n}", recall),
            ("recommend_ivf", "sample", "queries", float(counted))]
