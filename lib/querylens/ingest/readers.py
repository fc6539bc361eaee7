"""Read search logs (CSV, Parquet, a catalog table or UBI NDJSON) and aggregate to queries."""

from __future__ import annotations

import operator
import re
from functools import reduce
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from querylens.runtime.config import InputConfig
from querylens.runtime.errors import InputError

COUNT_COLUMNS = ("clicks", "add_to_bags", "purchases")
FLAGS = ("invalid_counts", "negative_counts", "invalid_timestamps", "future_timestamps")
SPARK_ERRORS = (PySparkException, Py4JJavaError)
ATOMIC = (T.StringType, T.NumericType, T.BooleanType, T.DateType, T.TimestampType,
          T.TimestampNTZType, T.BinaryType)



def read_events(
    spark: SparkSession, config: InputConfig, malformed: dict[str, int] | None = None
) -> DataFrame:
    """Search events with standard columns: query, session_id, ts, counts, filters and the
    per-event data-quality flags in `FLAGS` (1 where a value was invalid and replaced).

    Malformed UBI lines are dropped and counted into `malformed` by file key.
    """
    if config.format == "ubi":
        return read_ubi(spark, config, {} if malformed is None else malformed)
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
            raw = spark.read.csv(config.path, header=True, inferSchema=False, multiLine=False,
                                 encoding="UTF-8")
        else:
            raw = spark.read.parquet(config.path)
    except SPARK_ERRORS as exc:
        raise InputError(f"cannot read {describe(config)}: {spark_message(exc)}"
                         f"{suspect_files(config)}") from exc
    if not raw.columns:
        raise InputError(f"input {describe(config)} has no columns (an empty file?)")
    return raw


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
    require_unique_columns(raw.columns)
    available = set(raw.columns)
    missing = [f"{source} (input.columns.{target})" for target, source in mapping.items()
               if source not in available]
    if missing:
        raise InputError(
            f"input lacks mapped column {missing[0]}; columns present: {', '.join(raw.columns)}"
        )
    types = dict(raw.dtypes)
    fields = {f.name: f.dataType for f in raw.schema.fields}
    for target, source in mapping.items():
        if not isinstance(fields[source], ATOMIC):
            raise InputError(
                f"input column {source!r} (input.columns.{target}) has type {types[source]}; "
                "expected text, a number or a timestamp"
            )
    selected = [F.col(quoted(source)).alias(target) for target, source in mapping.items()]
    if isinstance(fields[mapping["ts"]], T.NumericType):
        selected[2] = F.timestamp_seconds(F.col(quoted(mapping["ts"]))).alias("ts")
    filters = [filter_text(raw, c).alias(c) for c in config.filter_columns]
    events = raw.select(*selected, *filters)
    return with_flags(events.select(
        F.col("query").cast("string").alias("query"),
        F.col("session_id").cast("string").alias("session_id"),
        "ts",
        *COUNT_COLUMNS,
        *config.filter_columns,
    ), config.filter_columns)


def with_flags(events: DataFrame, filter_columns: list[str]) -> DataFrame:
    """Counts as non-negative longs and `ts` as a timestamp; invalid values become 0 or null
    and are flagged in the `FLAGS` columns."""
    parsed = {c: F.col(c).try_cast("long") for c in COUNT_COLUMNS}
    ts = F.col("ts").try_cast("timestamp")
    invalid = reduce(operator.add, [(F.col(c).isNotNull() & parsed[c].isNull()).cast("int")
                                    for c in COUNT_COLUMNS])
    negative = reduce(operator.add, [F.coalesce((parsed[c] < 0).cast("int"), F.lit(0))
                                     for c in COUNT_COLUMNS])
    return events.select(
        "query", "session_id",
        ts.alias("ts"),
        *[F.greatest(F.coalesce(parsed[c], F.lit(0)), F.lit(0)).alias(c) for c in COUNT_COLUMNS],
        *filter_columns,
        invalid.alias("invalid_counts"),
        negative.alias("negative_counts"),
        (F.col("ts").isNotNull() & ts.isNull()).cast("int").alias("invalid_timestamps"),
        F.coalesce((ts > F.current_timestamp()).cast("int"), F.lit(0)).alias("future_timestamps"),
    )


def filter_text(raw: DataFrame, name: str) -> F.Column:
    """A filter column as text: arrays joined by spaces, missing columns null."""
    if name not in raw.columns:
        return F.lit(None).cast("string")
    kind = raw.schema[name].dataType
    if isinstance(kind, T.ArrayType) and isinstance(kind.elementType, ATOMIC):
        return F.array_join(F.col(quoted(name)).cast("array<string>"), " ")
    if not isinstance(kind, ATOMIC):
        raise InputError(f"filter column {name!r} has type {kind.simpleString()}; expected text, "
                         "a number or an array of them")
    return F.col(quoted(name)).cast("string")


def quoted(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def require_unique_columns(columns: list[str]) -> None:
    """Fail naming a column that appears twice (case-insensitively), as Spark resolves names."""
    seen: dict[str, str] = {}
    for name in columns:
        if name.lower() in seen:
            raise InputError(f"input has duplicated column {name!r} (also {seen[name.lower()]!r})")
        seen[name.lower()] = name
    for name in columns:
        match = re.fullmatch(r"(.+?)0", name)
        if match and f"{match.group(1)}1" in columns:
            raise InputError(
                f"input has duplicated column {match.group(1)!r} (Spark renamed the copies "
                f"{name!r}, {match.group(1) + '1'!r}, ...)"
            )


def read_ubi(spark: SparkSession, config: InputConfig, malformed: dict[str, int]) -> DataFrame:
    """Join UBI `ubi_queries` with counted `ubi_events` into standard search events."""
    queries = read_ndjson(spark, config.ubi_queries_path, "input.ubi_queries_path", malformed)
    events = read_ndjson(spark, config.ubi_events_path, "input.ubi_events_path", malformed)
    for name, df, needed in [
        ("ubi_queries", queries, ["query_id", "user_query", "timestamp"]),
        ("ubi_events", events, ["query_id", "action_name"]),
    ]:
        absent = [c for c in needed if c not in df.columns]
        if absent:
            raise InputError(f"{name} documents lack field {absent[0]} "
                             f"({sum(malformed.values())} malformed lines dropped)")

    def counted(actions: list[str]) -> F.Column:
        return F.sum(F.col("action_name").isin(actions).cast("long"))

    per_query = events.groupBy("query_id").agg(
        counted(config.ubi_click_actions).alias("clicks"),
        counted(config.ubi_add_to_bag_actions).alias("add_to_bags"),
        counted(config.ubi_purchase_actions).alias("purchases"),
    )
    session = [F.col(c) for c in ("session_id", "client_id") if c in queries.columns]
    joined = queries.join(per_query, "query_id", "left")
    return with_flags(joined.select(
        F.col("user_query").cast("string").alias("query"),
        (F.coalesce(*session) if session else F.lit(None)).cast("string").alias("session_id"),
        F.col("timestamp").alias("ts"),
        *[F.coalesce(F.col(c), F.lit(0)).alias(c) for c in COUNT_COLUMNS],
        *[F.lit(None).cast("string").alias(c) for c in config.filter_columns],
    ), config.filter_columns)


CORRUPT = "_corrupt_record"


def read_ndjson(
    spark: SparkSession, path: str | None, key: str, malformed: dict[str, int]
) -> DataFrame:
    """NDJSON documents, dropping bulk-API action lines such as {"index": {...}} and malformed
    lines (counted into `malformed[key]`)."""
    if not path:
        raise InputError(f"{key} must be set when input.format is 'ubi'")
    require_path(path, key)
    try:
        df = spark.read.json(path, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT)
        if df.columns == [CORRUPT]:
            lines = spark.read.text(path).where(F.trim("value") != "").count()
            raise InputError(f"{key} {path} has no valid JSON line ({lines} malformed)")
        if CORRUPT in df.columns:
            df = df.cache()
            malformed[key] = df.where(F.col(CORRUPT).isNotNull()).count()
            df = df.where(F.col(CORRUPT).isNull()).drop(CORRUPT)
    except SPARK_ERRORS as exc:
        raise InputError(f"cannot read {key} {path}: {spark_message(exc)}") from exc
    if not df.columns:
        raise InputError(f"{key} {path} has no JSON documents (an empty file?)")
    actions = [c for c in ("index", "create") if c in df.columns]
    for action in actions:
        df = df.where(F.col(action).isNull())
    return df.drop(*actions)


def require_path(path: str, key: str) -> None:
    if "://" not in path and not Path(path).exists():
        raise InputError(f"{key} not found: {path}")


PARQUET_MAGIC = b"PAR1"


def not_parquet(path: Path) -> bool:
    """True when a file lacks Parquet's magic bytes at its start or end (truncated, empty)."""
    size = path.stat().st_size
    if size < 12:
        return True
    with path.open("rb") as f:
        head = f.read(4)
        f.seek(size - 4)
        return head != PARQUET_MAGIC or f.read(4) != PARQUET_MAGIC


def suspect_files(config: InputConfig) -> str:
    """For local Parquet input: ' (not valid Parquet: a, b)' naming broken files, else ''."""
    root = Path(config.path)
    if config.format != "parquet" or "://" in config.path or not root.exists():
        return ""
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))
    bad = [str(p) for p in files if not_parquet(p)]
    if not bad:
        return ""
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f" (not valid Parquet: {', '.join(bad[:3])}{more})"


def describe(config: InputConfig) -> str:
    if config.format == "table":
        return f"table {config.table}"
    if config.format == "ubi":
        return f"UBI {config.ubi_queries_path} + {config.ubi_events_path}"
    return f"{config.format} {config.path}"


FILE_IN_MESSAGE = re.compile(r"(?:file:)?(/[^\s,;:'\"]+?\.(?:parquet|csv|json|orc)\b[^\s,;:'\"]*)")


def spark_message(exc: BaseException) -> str:
    """One line for a Spark or Java error: its first line plus the deepest cause naming a file."""
    text = str(exc.java_exception) if isinstance(exc, Py4JJavaError) else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by:")]
    head = lines[0] if lines else type(exc).__name__
    files = FILE_IN_MESSAGE.findall(text)
    detail = f" (file {files[0]})" if files and files[0] not in head else ""
    cause = f"; cause: {causes[-1]}" if causes and causes[-1] not in head else ""
    return (head + detail + cause)[:600]
