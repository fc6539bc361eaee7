"""The pipeline's stages; each reads this run's inputs from tables and writes its outputs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.cluster.stage import write_clusters, write_scores
from querylens.embed.cache import embed_queries
from querylens.executors import record_stage_tasks
from querylens.faults import arm
from querylens.ingest import first_line, ingest
from querylens.report import build_report
from querylens.report.data import manifest_of
from querylens.runs import Run, publish_latest_views
from querylens.tables import read_run_table

log = logging.getLogger("querylens")


def ingest_stage(run: Run) -> None:
    """Search logs -> `queries`."""
    queries, stats = ingest(run.spark, run.config.input, run.config.normalize)
    run.facts["ingest"] = asdict(stats)
    run.write("queries", queries)
    queries.unpersist()


def run_queries(run: Run) -> DataFrame:
    return read_run_table(run.spark, run.database, "queries", run.run_id).drop("run_id")


def embed_stage(run: Run) -> None:
    """`queries` -> cached `query_embeddings` (only queries the cache lacks are embedded)."""
    stats = embed_queries(
        run.spark, run_queries(run), run.config.embed, run.database, run.config.run.table_format,
        run_id=run.run_id,
    )
    run.facts["embed"] = asdict(stats)
    log.info("[%s] embedded %d new queries, reused %d cached, skipped %d, truncated %d (%s%s)",
             run.run_id, stats.embedded, stats.reused, stats.skipped, stats.truncated,
             stats.model_id, ", FALLBACK" if stats.fallback else "")


def cluster_stage(run: Run) -> None:
    """Embeddings -> a new saved cluster model, `cluster_assignments`, `clusters`,
    `cluster_sweep` (unless cluster.sweep=false), `pca_variance` and `model_metrics`."""
    run.facts["cluster"] = write_clusters(run, this_run_embeddings(run), run_queries(run))


def score_stage(run: Run) -> None:
    """Embeddings -> `cluster_assignments` and `clusters` under a saved model, no refit."""
    run.facts["score"] = write_scores(run, this_run_embeddings(run), run_queries(run))


def this_run_embeddings(run: Run) -> DataFrame:
    """(query_key, embedding) of this run's queries; runs the embed stage first if it has not."""
    if "embed" not in run.facts:
        embed_stage(run)
    facts = run.facts["embed"]
    cache = run.spark.table(f"{run.database}.query_embeddings").where(
        (F.col("model_id") == facts["model_id"])
        & (F.col("model_revision") == facts["model_revision"])
    )
    return run_queries(run).select("query_key").join(
        cache.select("query_key", "embedding"), "query_key"
    )


def success_stage(run: Run) -> None:
    """Queries, assignments, embeddings -> `success_labels`, `cluster_success`, the success
    model, `success_predictions`, `success_calibration` and its `model_metrics` rows."""
    from querylens.success.stages import success_stage as write_success

    write_success(run, this_run_embeddings(run))


def recommend_stage(run: Run) -> None:
    """Labels, predictions, embeddings -> `recommendations` (+ recall, demo evaluation)."""
    from querylens.success.stages import recommend_stage as write_recommendations

    write_recommendations(run, this_run_embeddings(run))


def report_stage(run: Run) -> None:
    """This run's tables -> `report.html` and its PNGs under `run.output_dir/run_id`."""
    path = build_report(run.spark, run.config, run.run_id, manifest_of(run))
    run.facts["report"] = {"path": str(path)}


STAGES: dict[str, Callable[[Run], object]] = {
    "ingest": ingest_stage,
    "embed": embed_stage,
    "cluster": cluster_stage,
    "success": success_stage,
    "recommend": recommend_stage,
    "report": report_stage,
}

JOB_STAGES: dict[str, Callable[[Run], object]] = {"score": score_stage}


def run_pipeline(run: Run, stages: list[str] | None = None) -> None:
    """Run `stages` (all by default) in order, recording the manifest even on failure.

    The run is recorded as `running` first (and the `<table>_latest` views are moved off it),
    then `failed` or `completed`; only a completed run is published to the views.
    """
    names = stages or list(STAGES)
    unknown = [n for n in names if n not in STAGES and n not in JOB_STAGES]
    if unknown:
        known = ", ".join([*STAGES, *JOB_STAGES])
        raise ValueError(f"unknown stage {unknown[0]!r}; stages: {known}")
    run.record("running")
    publish_latest_views(run.spark, run.database)
    arm(run.spark.sparkContext, run.config.run.fail_first_attempt)
    try:
        for name in names:
            with run.stage(name), record_stage_tasks(run, name):
                (STAGES[name] if name in STAGES else JOB_STAGES[name])(run)
    except BaseException as exc:
        log.error("[%s] run failed: %s", run.run_id, first_line(exc))
        run.record("failed")
        raise
    finally:
        arm(run.spark.sparkContext, [])
    run.record("completed")
    publish_latest_views(run.spark, run.database)
