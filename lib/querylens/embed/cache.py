"""The `query_embeddings` cache: embed only (query, model) pairs it lacks."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.config import EmbedConfig
from querylens.embed.encoders import load_encoder
from querylens.embed.udf import embed_column
from querylens.tables import append_table, qualified

TABLE = "query_embeddings"


@dataclass(frozen=True)
class EmbedStats:
    model_id: str
    model_revision: str
    dim: int
    embedded: int
    reused: int


def cached_embeddings(
    spark: SparkSession, database: str, model_id: str, revision: str
) -> DataFrame | None:
    name = qualified(database, TABLE)
    if not spark.catalog.tableExists(name):
        return None
    table = spark.table(name)
    return table.where((F.col("model_id") == model_id) & (F.col("model_revision") == revision))


def embed_queries(
    spark: SparkSession, queries: DataFrame, config: EmbedConfig, database: str,
    table_format: str = "parquet",
) -> EmbedStats:
    """Cache embeddings for every query in `queries`, computing only the missing ones."""
    probe = load_encoder(config.model, "cpu", config.normalize, config.batch_size)
    model_id, revision, dim = probe.model_id, probe.revision, probe.dim
    wanted = queries.select("query_key", "query").dropDuplicates(["query_key"])
    cached = cached_embeddings(spark, database, model_id, revision)
    missing = wanted if cached is None else wanted.join(cached, "query_key", "left_anti")
    fresh = missing.select(
        "query_key",
        F.lit(model_id).alias("model_id"),
        F.lit(revision).alias("model_revision"),
        F.lit(dim).alias("dim"),
        embed_column(F.col("query"), config.model, config.device, config.normalize,
                     config.batch_size).alias("embedding"),
        F.current_timestamp().alias("embedded_at"),
    )
    n_before = 0 if cached is None else cached.count()
    append_table(fresh, database, TABLE, table_format)
    all_cached = cached_embeddings(spark, database, model_id, revision)
    assert all_cached is not None
    embedded = all_cached.count() - n_before
    return EmbedStats(model_id, revision, dim, embedded, wanted.count() - embedded)
