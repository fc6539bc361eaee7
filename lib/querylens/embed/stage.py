"""The embed stage, and the reader every later stage uses for this run's embeddings."""

from __future__ import annotations

import logging
from dataclasses import asdict

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.embed.cache import TABLE, embed_queries, same_precision
from querylens.runtime.errors import StageInputError
from querylens.runtime.runs import Run
from querylens.runtime.stages import Stage
from querylens.runtime.tables import qualified

log = logging.getLogger("querylens")


def embed_stage(run: Run) -> None:
    """`queries` -> cached `query_embeddings` (only queries the cache lacks are embedded)."""
    stats = embed_queries(run.spark, run.read("queries"), run.config.embed, run.database,
                          run.config.run.table_format, run_id=run.run_id)
    run.facts["embed"] = asdict(stats)
    log.info("[%s] embedded %d new queries, reused %d cached, skipped %d, truncated %d "
             "(%s, %s%s%s)",
             run.run_id, stats.embedded, stats.reused, stats.skipped, stats.truncated,
             stats.model_id, stats.precision, ", FALLBACK" if stats.fallback else "",
             ", BACKEND FALLBACK" if stats.backend_fallback else "")


def run_embeddings(run: Run) -> DataFrame:
    """(query_key, embedding) of this run's queries, under the model and precision its embed
    stage recorded."""
    facts = run.facts.get("embed")
    if not facts:
        raise StageInputError(f"run {run.run_id} records no embed stage: run "
                              f"`querylens embed --run-id {run.run_id}` first")
    cache = run.spark.table(qualified(run.database, TABLE)).where(
        (F.col("model_id") == facts["model_id"])
        & (F.col("model_revision") == facts["model_revision"])
        & same_precision(facts.get("precision", "torch")))
    return run.read("queries").select("query_key").join(
        cache.select("query_key", "embedding"), "query_key")


EMBED = Stage("embed", embed_stage, reads=("queries",), writes=(TABLE,))
