"""The success stage: labels, per-cluster success, the success model, its baselines and metrics,
and P(success) for every query."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.embed.stage import run_embeddings
from querylens.runtime.arrays import to_pandas, with_matrix
from querylens.runtime.config import SuccessConfig
from querylens.runtime.runs import Run
from querylens.runtime.stages import Stage, without_interactions
from querylens.runtime.tables import qualified
from querylens.success import evaluate, metrics
from querylens.success.labels import cluster_success, label_queries
from querylens.success.model import SuccessMLP, score_column

log = logging.getLogger("querylens")

Row = tuple[str, str, str, float]


def with_split(df: DataFrame, config: SuccessConfig) -> DataFrame:
    """A `split` column (train/validation/test) from a seeded hash of query_key."""
    u = (F.abs(F.xxhash64("query_key", F.lit(config.seed))) % 1_000_000) / 1_000_000.0
    return df.withColumn("split", F.when(u < config.test_fraction, "test")
                         .when(u < config.test_fraction + config.validation_fraction, "validation")
                         .otherwise("train"))


def success_stage(run: Run) -> None:
    """Queries, assignments, embeddings -> `success_labels`, `cluster_success`, the success
    model, `success_predictions`, `success_calibration` and its `model_metrics` rows."""
    cfg = run.config.success
    embeddings = run_embeddings(run)
    cached, stats = label_queries(run.read("queries"), run.read("cluster_assignments"),
                                  cfg)
    try:
        train_and_score(run, with_split(cached, cfg), stats, embeddings)
    finally:
        cached.unpersist()


def train_and_score(run: Run, labels: DataFrame, stats: Any, embeddings: DataFrame) -> None:
    """Write labels and cluster rates; unless the labels cannot train one, fit and score."""
    cfg = run.config.success
    run.write("success_labels", labels)
    run.write("cluster_success", cluster_success(labels, cfg.confidence))
    publish_cluster_success_view(run)
    facts: dict[str, Any] = {"labels": {**asdict(stats), "unlabelled": stats.unlabelled},
                             "notes": []}
    run.facts["success"] = facts
    rows: list[Row] = label_rows(stats)
    truth = evaluate.ground_truth(run.spark, run.database)
    if stats.problem:
        facts["model"] = f"skipped: {stats.problem}"
        run.write_metrics(rows)
        return
    data, vectors = with_matrix(labels.where(F.col("success").isNotNull()).join(
        embeddings, "query_key").select(
        "query_key", "cluster_id", "split", F.col("success").cast("int").alias("y"), "embedding",
    ).orderBy("query_key"), "embedding")
    classes = split_classes(data)
    facts["split_classes"] = classes
    rows += [("labels", split, kind, float(n)) for split, counts in classes.items()
             for kind, n in counts.items()]
    problem = split_problem(classes, cfg.min_per_class)
    if problem:
        facts["model"] = f"skipped: {problem}"
        log.warning("success model: %s", problem)
        run.write_metrics(rows)
        return
    masks = {s: (data["split"] == s).to_numpy() for s in SPLITS}
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
    run.write_metrics(rows)


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


def label_rows(stats: Any) -> list[Row]:
    """Label counts: queries, labelled, successful, `min_support` and the low-support queries
    it left unlabelled, all unlabelled, those with failure evidence, and the threshold."""
    rows: list[Row] = [("labels", "all", "queries", float(stats.queries)),
                       ("labels", "all", "labelled", float(stats.labelled)),
                       ("labels", "all", "successful", float(stats.successful)),
                       ("labels", "all", "min_support", float(stats.min_support)),
                       ("labels", "all", "low_support", float(stats.low_support)),
                       ("labels", "all", "unlabelled", float(stats.unlabelled)),
                       ("labels", "all", "with_failure_evidence",
                        float(stats.with_failure_evidence))]
    if stats.threshold is not None:
        rows.append(("labels", "all", "threshold", float(stats.threshold)))
    return rows


SPLITS = ("train", "validation", "test")


def split_classes(data: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Labelled queries with embeddings per split: successes and failures."""
    return {split: {"successes": int((data.loc[data["split"] == split, "y"] == 1).sum()),
                    "failures": int((data.loc[data["split"] == split, "y"] == 0).sum())}
            for split in SPLITS}


def split_problem(classes: dict[str, dict[str, int]], min_per_class: int) -> str | None:
    """Why the success model refuses to train: a split with fewer than `min_per_class`
    labelled successes or failures; else None."""
    short = [f"{split} {c['successes']} successes / {c['failures']} failures"
             for split, c in classes.items() if min(c.values()) < min_per_class]
    if not short:
        return None
    return (f"too few labelled queries to train and evaluate a success model: "
            f"{'; '.join(short)} (success.min_per_class={min_per_class} needs at least "
            f"{min_per_class} of each class in each of train, validation and test)")


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
    frame = to_pandas(run.read("success_labels").select(
        "query_key", "smoothed_score", "split").join(
        run.read("success_predictions").select("query_key", "p_success"), "query_key",
        "left").join(truth.select("query_key", "true_p"), "query_key"))
    rows = evaluate.evaluate_scores(frame, "labels", "demo_truth", "smoothed_score")
    rows += evaluate.evaluate_scores(frame[frame["split"] == "test"], "nn", "demo_truth",
                                     "p_success")
    return rows


def publish_cluster_success_view(run: Run) -> None:
    """The view `clusters_with_success`: every run's `clusters` rows with the success stage's
    `success_rate` from `cluster_success` (null where a run has no success stage)."""
    clusters, success = (qualified(run.database, t) for t in ("clusters", "cluster_success"))
    if run.spark.catalog.tableExists(clusters):
        run.spark.sql(
            f"CREATE OR REPLACE VIEW {qualified(run.database, CLUSTER_SUCCESS_VIEW)} AS "
            f"SELECT c.*, s.success_rate FROM {clusters} c LEFT JOIN {success} s "
            "ON c.run_id = s.run_id AND c.cluster_id = s.cluster_id")


CLUSTER_SUCCESS_VIEW = "clusters_with_success"

SUCCESS = Stage("success", success_stage,
                reads=("queries", "cluster_assignments", "query_embeddings"),
                writes=("success_labels", "cluster_success", "success_calibration",
                        "success_predictions", "model_metrics"),
                uses=("clusters", "demo_ground_truth"), skip=without_interactions)
