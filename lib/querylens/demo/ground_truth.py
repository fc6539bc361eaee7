"""Demo search logs on disk plus their ground truth table."""

from __future__ import annotations

import logging
import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.demo.generator import Behaviour, generate_catalogue, generate_events
from querylens.ingest.normalize import with_normalized_query
from querylens.runtime.config import Config
from querylens.runtime.specs import TABLES
from querylens.runtime.tables import conform, qualified

log = logging.getLogger("querylens")

GROUND_TRUTH_TABLE = "demo_ground_truth"


def ground_truth(catalogue: DataFrame, config: Config) -> DataFrame:
    """Per normalised demo query: its true category, brand, kind, latent success probability,
    stock, the normalised query the user meant (`intended_query`) and, for a kind with one, the
    normalised query users reformulate it to (`reformulation_query`, `reformulation_kind`).

    Templates that normalise to the same search share their truth; the lowest template id (a typed
    template before a reformulation companion) is kept.
    """
    filters, normalize = config.input.filter_columns, config.normalize
    keyed = with_normalized_query(catalogue, filters, normalize)
    intended = with_normalized_query(
        catalogue.withColumn("query", F.col("intended_query")), filters, normalize
    ).select("template_id", F.col("query_norm").alias("intended_norm"))
    rewritten = keyed.where(F.col("reformulates").isNotNull()).select(
        F.col("reformulates").alias("template_id"), F.col("query_norm").alias("reformulation_query")
    )
    truth = ["query_norm", "kind", "true_category", "true_brand", "p_success", "in_stock",
             "reformulates", "reformulation_kind", "reformulation_query", "intended_norm"]
    first = F.min(F.struct("template_id", *truth)).alias("t")
    return (
        keyed.join(intended, "template_id").join(rewritten, "template_id", "left")
        .where(F.col("query_key").isNotNull())
        .groupBy("query_key")
        .agg(first)
        .select("query_key", F.col("t.query_norm").alias("query"), "t.template_id",
                *[f"t.{c}" for c in truth[1:-1]], F.col("t.intended_norm").alias("intended_query"))
    )


def write_demo_logs(spark: SparkSession, config: Config) -> None:
    """Generate `generate.n_events` events to `input.path` (Parquet) and the ground truth table."""
    gen = config.generate
    start = time.perf_counter()
    catalogue = generate_catalogue(spark, gen.n_queries, gen.seed).cache()
    behaviour = Behaviour(gen.reformulate_rate, gen.fragment_rate, gen.satisfied_no_click_rate)
    events = generate_events(spark, catalogue, gen.n_events, gen.seed, gen.start, gen.days,
                             behaviour=behaviour)
    events.write.mode("overwrite").parquet(config.input.path)
    name = qualified(config.run.database, GROUND_TRUTH_TABLE)
    truth = conform(ground_truth(catalogue, config), TABLES[GROUND_TRUTH_TABLE])
    truth.write.mode("overwrite").format(
        config.run.table_format
    ).saveAsTable(name)
    log.info("wrote %d demo events to %s and ground truth to %s in %.1fs", gen.n_events,
             config.input.path, name, time.perf_counter() - start)
