"""The cluster and score stages: fit (or load) the cluster model, save it, write its tables."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.cluster.evaluate import reference_labels
from querylens.cluster.fit import (
    SILHOUETTE_SAMPLES_SCHEMA,
    ClusterResult,
    fit_clusters,
    score_clusters,
)
from querylens.cluster.model import ClusterModel, load_model, save_model, versions
from querylens.embed.stage import run_embeddings
from querylens.runtime.runs import Run
from querylens.runtime.stages import Stage

log = logging.getLogger("querylens")


def model_dir(run: Run) -> Path:
    """`cluster.model_dir`, else `run.output_dir`/models/cluster."""
    configured = run.config.cluster.model_dir
    return Path(configured) if configured else Path(run.config.run.output_dir) / "models/cluster"


def previous_model(root: Path, embedding_model_id: str | None) -> ClusterModel | None:
    """The latest saved model fitted on the same embedding model, if any."""
    for version in reversed(versions(root)):
        model = load_model(root, version)
        if model.meta.get("embedding_model_id") == embedding_model_id:
            return model
    return None


def write_metrics(run: Run, rows: pd.DataFrame) -> None:
    """This run's `model_metrics` rows of the cluster model."""
    run.write_metrics([(r.model, r.split, r.metric, float(r.value)) for r in rows.itertuples()])


def with_version(df: DataFrame, version: int | None) -> DataFrame:
    return df.withColumn("model_version", F.lit(version).cast("int"))


def write_silhouette_samples(run: Run, result: ClusterResult, version: int | None) -> None:
    """`silhouette_samples`: the exact Euclidean silhouette of each query of the seeded sample."""
    assert result.silhouette_samples is not None
    frame = run.spark.createDataFrame(result.silhouette_samples, SILHOUETTE_SAMPLES_SCHEMA)
    run.write("silhouette_samples", with_version(frame, version))


def write_clusters(run: Run, embeddings: DataFrame, queries: DataFrame) -> dict[str, Any]:
    """Fit, save the model as a new version and write this run's cluster tables."""
    config = run.config.cluster
    embed_model = run.facts.get("embed", {}).get("model_id")
    root = model_dir(run)
    previous = previous_model(root, embed_model) if config.match_previous else None
    labels, source = reference_labels(run.spark, run.config)
    result = fit_clusters(run.spark, embeddings, queries, config, model_id=embed_model,
                          previous=previous, labels=labels)
    try:
        model = save_model(result.model, root, {"run_id": run.run_id,
                                                "embedding_model_revision": run.facts.get(
                                                    "embed", {}).get("model_revision")})
        version = model.version
        run.write("cluster_assignments", with_version(result.assignments, version))
        run.write("clusters", with_version(result.clusters, version))
        write_silhouette_samples(run, result, version)
        assert result.pca_variance is not None
        run.write("pca_variance", run.spark.createDataFrame(result.pca_variance))
        if result.sweep is not None:
            run.write("cluster_sweep", run.spark.createDataFrame(result.sweep))
        write_metrics(run, result.metrics)
    finally:
        result.unpersist()
    log.info("[%s] cluster choice: %s", run.run_id, result.facts["choice_reason"])
    log.info("[%s] cluster model v%s saved under %s", run.run_id, version, root)
    return {**result.facts, "model_version": version, "model_dir": str(root),
            "external_labels": source}


def write_scores(run: Run, embeddings: DataFrame, queries: DataFrame) -> dict[str, Any]:
    """Assign this run's queries to a saved model (`cluster.score_version`, else the latest)."""
    config = run.config.cluster
    root = model_dir(run)
    model = load_model(root, config.score_version)
    embed_model = run.facts.get("embed", {}).get("model_id")
    labels, source = reference_labels(run.spark, run.config)
    result = score_clusters(run.spark, embeddings, queries, model, config, model_id=embed_model,
                            labels=labels)
    try:
        run.write("cluster_assignments", with_version(result.assignments, model.version))
        run.write("clusters", with_version(result.clusters, model.version))
        write_silhouette_samples(run, result, model.version)
        write_metrics(run, result.metrics)
    finally:
        result.unpersist()
    return {**result.facts, "model_dir": str(root), "external_labels": source}


def cluster_stage(run: Run) -> None:
    """Embeddings -> a new saved cluster model, `cluster_assignments`, `clusters`,
    `silhouette_samples`, `cluster_sweep` (unless cluster.sweep=false), `pca_variance` and
    `model_metrics` (with external validation when there are reference labels)."""
    run.facts["cluster"] = write_clusters(run, run_embeddings(run), run.read("queries"))


def score_stage(run: Run) -> None:
    """Embeddings -> `cluster_assignments`, `clusters` and `silhouette_samples` under a saved
    model, no refit."""
    run.facts["score"] = write_scores(run, run_embeddings(run), run.read("queries"))


CLUSTER = Stage("cluster", cluster_stage, reads=("queries", "query_embeddings"),
                uses=("demo_ground_truth",),
                writes=("cluster_assignments", "clusters", "silhouette_samples", "pca_variance",
                        "cluster_sweep", "model_metrics"))
SCORE = Stage("score", score_stage, reads=("queries", "query_embeddings"),
              uses=("demo_ground_truth",),
              writes=("cluster_assignments", "clusters", "silhouette_samples", "model_metrics"))
