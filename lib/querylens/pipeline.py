"""The pipeline's stages; each reads this run's inputs from tables and writes its outputs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.cluster import cluster_queries
from querylens.embed.cache import embed_queries
from querylens.ingest import ingest
from querylens.runs import Run
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
        run.spark, run_queries(run), run.config.embed, run.database, run.config.run.table_format
    )
    run.facts["embed"] = asdict(stats)
    log.info("[%s] embedded %d new queries, reused %d cached (%s)", run.run_id,
             stats.embedded, stats.reused, stats.model_id)


def cluster_stage(run: Run) -> None:
    """Embeddings -> `cluster_assignments` and `clusters`."""
    if "embed" not in run.facts:
        embed_stage(run)
    assignments, clusters = cluster_queries(
        run.spark, this_run_embeddings(run), run_queries(run), run.config.cluster
    )
    run.write("cluster_assignments", assignments)
    run.write("clusters", clusters)


def this_run_embeddings(run: Run) -> DataFrame:
    facts = run.facts["embed"]
    cache = run.spark.table(f"{run.database}.query_embeddings").where(
        (F.col("model_id") == facts["model_id"])
        & (F.col("model_revision") == facts["model_revision"])
    )
    return run_queries(run).select("query_key").join(
        cache.select("query_key", "embedding"), "query_key"
    )


STAGES: dict[str, Callable[[Run], object]] = {
    "ingest": ingest_stage,
    "embed": embed_stage,
    "cluster": cluster_stage,
}


def run_pipeline(run: Run, stages: list[str] | None = None) -> None:
    """Run `stages` (all by default) in order, recording the manifest even on failure."""
    try:
        for name in stages or list(STAGES):
            with run.stage(name):
                STAGES[name](run)
    except BaseException:
        run.record("failed")
        raise
    run.record("completed")
