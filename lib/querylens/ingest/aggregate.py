"""Search events -> one row per normalised query, with the counts the run manifest records."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.ingest.normalize import PII_PATTERNS, placeholder, with_normalized_query
from querylens.ingest.readers import (
    COUNT_COLUMNS,
    FLAGS,
    SPARK_ERRORS,
    describe,
    read_events,
    spark_message,
    suspect_files,
)
from querylens.runtime.config import InputConfig, NormalizeConfig
from querylens.runtime.errors import InputError


@dataclass(frozen=True)
class IngestStats:
    events: int
    skipped_empty_queries: int
    queries: int
    redacted_searches: dict[str, int]
    invalid_counts: int = 0
    negative_counts: int = 0
    invalid_timestamps: int = 0
    future_timestamps: int = 0
    malformed_lines: dict[str, int] = field(default_factory=dict)


def aggregate_queries(
    events: DataFrame, filter_columns: list[str], config: NormalizeConfig
) -> DataFrame:
    """One row per normalised query with its counts; blank queries form the null-key row."""
    normalized = with_normalized_query(events, filter_columns, config)
    return normalized.groupBy("query_key").agg(
        F.first("query_norm").alias("query"),
        F.count(F.lit(1)).alias("n_searches"),
        F.countDistinct("session_id").alias("n_sessions"),
        *[F.sum(c).alias(c) for c in COUNT_COLUMNS],
        F.sum((F.col("clicks") > 0).cast("long")).alias("searches_with_click"),
        F.sum((F.col("add_to_bags") > 0).cast("long")).alias("searches_with_add_to_bag"),
        F.sum((F.col("purchases") > 0).cast("long")).alias("searches_with_purchase"),
        F.min("ts").alias("first_seen"),
        F.max("ts").alias("last_seen"),
        *[F.sum(c).alias(c) for c in FLAGS if c in events.columns],
    )


def ingest(
    spark: SparkSession, input_config: InputConfig, normalize_config: NormalizeConfig
) -> tuple[DataFrame, IngestStats]:
    """Read events and return the cached `queries` DataFrame with counts for the manifest."""
    malformed: dict[str, int] = {}
    events = read_events(spark, input_config, malformed)
    grouped = aggregate_queries(events, input_config.filter_columns, normalize_config).cache()
    try:
        totals = grouped.agg(
            F.sum("n_searches").alias("events"),
            F.sum(F.when(F.col("query_key").isNull(), F.col("n_searches"))).alias("skipped"),
            F.count("query_key").alias("queries"),
            *[F.sum(F.when(F.col("query").contains(placeholder(kind)), F.col("n_searches")))
              .alias(kind) for kind in PII_PATTERNS],
            *[F.sum(c).alias(c) for c in FLAGS],
        ).first()
    except SPARK_ERRORS as exc:
        grouped.unpersist()
        raise InputError(
            f"cannot read input {describe(input_config)}: {spark_message(exc)}"
            f"{suspect_files(input_config)}"
        ) from exc
    assert totals is not None
    if not totals["events"]:
        raise InputError(f"input has no search events: {describe(input_config)}")
    if totals["queries"] == 0:
        raise InputError(f"input has no non-empty queries: {describe(input_config)}")
    redacted = {kind: totals[kind] or 0 for kind in PII_PATTERNS}
    flags = {c: int(totals[c] or 0) for c in FLAGS}
    stats = IngestStats(totals["events"], totals["skipped"] or 0, totals["queries"], redacted,
                        malformed_lines=malformed, **flags)
    return grouped.where(F.col("query_key").isNotNull()).drop(*FLAGS), stats
