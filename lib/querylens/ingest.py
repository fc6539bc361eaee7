"""Read search logs (CSV, Parquet, a catalog table or UBI NDJSON) and aggregate to queries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.config import InputConfig, NormalizeConfig
from querylens.normalize import PII_PATTERNS, placeholder, with_normalized_query

COUNT_COLUMNS = ("clicks", "add_to_bags", "purchases")


class InputError(ValueError):
    """Search logs are missing, unreadable or lack a required column."""


@dataclass(frozen=True)
class IngestStats:
    events: int
    skipped_empty_queries: int
    queries: int
    redacted_searches: dict[str, int]


def read_events(spark: SparkSession, config: InputConfig) -> DataFrame:
    """Search events with standard columns: query, session_id, ts, counts and filters."""
    if config.format == "ubi":
        return read_ubi(spark, config)
    raw = read_raw(spark, config)
    return standardize(raw, config)


def read_raw(spark: SparkSession, config: InputConfig) -> DataFrame:
    try:
        if config.format == "table":
            if not config.table:
                raise InputError("input.table must name a table when input.format is 'table'")
            if not spark.catalog.tableExists(config.table):
                raise InputError(f"input table not found: {config.table}")
            return spark.table(config.table)
        require_path(config.path, "input.path")
        if config.format == "csv":
            return spark.read.csv(config.path, header=True, inferSchema=True, multiLine=False)
        return spark.read.parquet(config.path)
    except AnalysisException as exc:
        raise InputError(f"cannot read {describe(config)}: {first_line(exc)}") from exc


def standardize(raw: DataFrame, config: InputConfig) -> DataFrame:
    """Rename mapped columns to the standard names; fail naming any that are missing."""
    mapping = {
        "query": config.columns.query,
        "session_id": config.columns.session_id,
        "ts": config.columns.timestamp,
        "clicks": config.columns.clicks,
        "add_to_bags": config.columns.add_to_bags,
        "purchases": config.columns.purchases,
    }
    available = set(raw.columns)
    missing = [f"{source} (input.columns.{target})" for target, source in mapping.items()
               if source not in available]
    if missing:
        raise InputError(
            f"input lacks mapped column {missing[0]}; columns present: {', '.join(raw.columns)}"
        )
    selected = [F.col(f"`{source}`").alias(target) for target, source in mapping.items()]
    filters = [
        (F.col(f"`{c}`") if c in available else F.lit(None)).cast("string").alias(c)
        for c in config.filter_columns
    ]
    events = raw.select(*selected, *filters)
    return events.select(
        F.col("query").cast("string").alias("query"),
        F.col("session_id").cast("string").alias("session_id"),
        F.col("ts").cast("timestamp").alias("ts"),
        *[F.greatest(F.coalesce(F.col(c).cast("long"), F.lit(0)), F.lit(0)).alias(c)
          for c in COUNT_COLUMNS],
        *config.filter_columns,
    )


def read_ubi(spark: SparkSession, config: InputConfig) -> DataFrame:
    """Join UBI `ubi_queries` with counted `ubi_events` into standard search events."""
    queries = read_ndjson(spark, config.ubi_queries_path, "input.ubi_queries_path")
    events = read_ndjson(spark, config.ubi_events_path, "input.ubi_events_path")
    for name, df, needed in [
        ("ubi_queries", queries, ["query_id", "user_query", "timestamp"]),
        ("ubi_events", events, ["query_id", "action_name"]),
    ]:
        absent = [c for c in needed if c not in df.columns]
        if absent:
            raise InputError(f"{name} documents lack field {absent[0]}")

    def counted(actions: list[str]) -> F.Column:
        return F.sum(F.col("action_name").isin(actions).cast("long"))

    per_query = events.groupBy("query_id").agg(
        counted(config.ubi_click_actions).alias("clicks"),
        counted(config.ubi_add_to_bag_actions).alias("add_to_bags"),
        counted(config.ubi_purchase_actions).alias("purchases"),
    )
    session = [F.col(c) for c in ("session_id", "client_id") if c in queries.columns]
    joined = queries.join(per_query, "query_id", "left")
    return joined.select(
        F.col("user_query").cast("string").alias("query"),
        (F.coalesce(*session) if session else F.lit(None)).cast("string").alias("session_id"),
        F.col("timestamp").cast("timestamp").alias("ts"),
        *[F.coalesce(F.col(c), F.lit(0)).alias(c) for c in COUNT_COLUMNS],
        *[F.lit(None).cast("string").alias(c) for c in config.filter_columns],
    )


def read_ndjson(spark: SparkSession, path: str | None, key: str) -> DataFrame:
    """NDJSON documents, dropping bulk-API action lines such as {"index": {...}}."""
    if not path:
        raise InputError(f"{key} must be set when input.format is 'ubi'")
    require_path(path, key)
    df = spark.read.json(path, mode="PERMISSIVE")
    actions = [c for c in ("index", "create") if c in df.columns]
    for action in actions:
        df = df.where(F.col(action).isNull())
    return df.drop(*actions)


def require_path(path: str, key: str) -> None:
    if "://" not in path and not Path(path).exists():
        raise InputError(f"{key} not found: {path}")


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
    )


def ingest(
    spark: SparkSession, input_config: InputConfig, normalize_config: NormalizeConfig
) -> tuple[DataFrame, IngestStats]:
    """Read events and return the cached `queries` DataFrame with counts for the manifest."""
    events = read_events(spark, input_config)
    grouped = aggregate_queries(events, input_config.filter_columns, normalize_config).cache()
    try:
        totals = grouped.agg(
            F.sum("n_searches").alias("events"),
            F.sum(F.when(F.col("query_key").isNull(), F.col("n_searches"))).alias("skipped"),
            F.count("query_key").alias("queries"),
            *[F.sum(F.when(F.col("query").contains(placeholder(kind)), F.col("n_searches")))
              .alias(kind) for kind in PII_PATTERNS],
        ).first()
    except AnalysisException as exc:
        raise InputError(f"cannot read input {describe(input_config)}: {first_line(exc)}") from exc
    assert totals is not None
    if not totals["events"]:
        raise InputError(f"input has no search events: {describe(input_config)}")
    if totals["queries"] == 0:
        raise InputError(f"input has no non-empty queries: {describe(input_config)}")
    redacted = {kind: totals[kind] or 0 for kind in PII_PATTERNS}
    stats = IngestStats(totals["events"], totals["skipped"] or 0, totals["queries"], redacted)
    return grouped.where(F.col("query_key").isNotNull()), stats


def describe(config: InputConfig) -> str:
    if config.format == "table":
        return f"table {config.table}"
    if config.format == "ubi":
        return f"UBI {config.ubi_queries_path} + {config.ubi_events_path}"
    return f"{config.format} {config.path}"


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
