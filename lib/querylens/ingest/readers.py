"""Read tabular search logs (CSV, Parquet, a catalog table) as standard search events."""

from __future__ import annotations

import dataclasses
import glob
import logging
import operator
import os
import re
from functools import reduce
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from querylens.runtime.config import ColumnsConfig, InputConfig, mask_value
from querylens.runtime.errors import InputError

COUNT_COLUMNS = ("clicks", "add_to_bags", "purchases")
EXPOSURE_COLUMNS = {"impressions": "bigint", "positioned_clicks": "bigint",
                    "click_position_sum": "double", "results_shown": "bigint"}
FLAGS = ("invalid_counts", "negative_counts", "invalid_timestamps", "future_timestamps")
SPARK_ERRORS = (PySparkException, Py4JJavaError)
ATOMIC = (T.StringType, T.NumericType, T.BooleanType, T.DateType, T.TimestampType,
          T.TimestampNTZType, T.BinaryType)

log = logging.getLogger("querylens")


def read_raw(
    spark: SparkSession, config: InputConfig, malformed: dict[str, int], samples: list[str],
    facts: dict[str, Any] | None = None,
) -> DataFrame:
    """The input's rows as Spark reads them. CSV rows that do not parse are dropped, counted
    into `malformed["input.path"]` and the first `MALFORMED_SAMPLES` kept in `samples`; files of
    a CSV or Parquet folder that are not data files are skipped and counted into
    `facts["skipped_files"]` (see `data_files`); a glob's matched files are counted into
    `facts["glob_files"]`, Parquet columns widened across files into
    `facts["widened_columns"]` (see `widened_types`)."""
    try:
        if config.format == "table":
            if not config.table:
                raise InputError("input.table must name a table when input.format is 'table'")
            if not spark.catalog.tableExists(config.table):
                raise InputError(f"input table not found: {config.table}")
            return spark.table(config.table)
        require_path(config.path, "input.path")
        paths, skipped = data_files(config)
        if facts is not None:
            facts["skipped_files"] = len(skipped)
        if config.format == "csv":
            raw = read_csv(spark, config, malformed, samples, paths)
        else:
            raw = read_parquet(spark, config, paths, facts if facts is not None else {})
        if facts is not None and is_glob(config.path):
            facts["glob_files"] = len(raw.inputFiles())
    except SPARK_ERRORS as exc:
        raise InputError(f"cannot read {describe(config)}: {spark_message(exc)}"
                         f"{suspect_files(config)}") from exc
    if not raw.columns:
        raise InputError(f"input {describe(config)} has no columns (an empty file?)")
    return raw


BAD_ROW = "_querylens_bad_row"
MALFORMED_SAMPLES = 5
CSV_PRUNING = "spark.sql.csv.parser.columnPruning.enabled"


def read_csv(
    spark: SparkSession, config: InputConfig, malformed: dict[str, int], samples: list[str],
    paths: str | list[str] | None = None,
) -> DataFrame:
    """Every column as text under the header's names (`input.options` over RFC 4180 defaults);
    rows with the wrong number of fields or an unclosed quote are counted and dropped.

    Spark flags such rows only when it parses every column, so the parsed rows are cached
    when the session prunes CSV columns (`runtime.session` turns that off). `paths` (default
    `input.path`) are the files `data_files` keeps."""
    options = config.csv_options()
    paths = config.path if paths is None else paths
    columns = file_reader(spark, config, paths).options(**options).csv(paths).columns
    if not columns:
        return spark.createDataFrame([], T.StructType([]))
    schema = T.StructType([T.StructField(c, T.StringType()) for c in [*columns, BAD_ROW]])
    parsed = (file_reader(spark, config, paths).options(**options).schema(schema)
              .options(mode="PERMISSIVE", columnNameOfCorruptRecord=BAD_ROW).csv(paths))
    if str(spark.conf.get(CSV_PRUNING, "true")).lower() != "false":
        parsed = parsed.cache()
    bad = parsed.agg(F.count(BAD_ROW).alias("bad"), F.count(quoted(columns[0]))).first()
    if bad is not None and bad["bad"]:
        malformed["input.path"] = malformed.get("input.path", 0) + bad["bad"]
        rows = (parsed.where(F.col(BAD_ROW).isNotNull()).select(BAD_ROW, quoted(columns[0]))
                .limit(MALFORMED_SAMPLES).collect())
        samples += [shorten(r[BAD_ROW]) for r in rows]
        log.warning("input.path %s: dropped %d rows that do not parse as CSV with %d fields "
                    "(wrong number of fields or an unclosed quote), e.g. %s", config.path,
                    bad["bad"], len(columns), "; ".join(repr(s) for s in samples))
    return parsed.where(F.col(BAD_ROW).isNull()).drop(BAD_ROW)


DATA_SUFFIXES = {"csv": (".csv", ".tsv", ".psv", ".dat"), "parquet": (".parquet", ".parq", ".pq")}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".snappy", ".deflate", ".xz", ".zstd")
PARTITION_DIR = re.compile(r"^[^=]+=.*$")


def is_data_file(name: str, file_format: str) -> bool:
    """True for a name with one of the format's `DATA_SUFFIXES` (optionally compressed, as in
    `part-0.csv.gz`) or with no suffix at all (Hive's `000000_0`); `README.txt`, `x.csv~`,
    `x.csv.bak`, `x.json` are not data files."""
    path = Path(name)
    suffix = path.suffix.lower()
    if suffix in COMPRESSION_SUFFIXES:
        path = path.with_suffix("")
        suffix = path.suffix.lower()
    return suffix == "" or suffix in DATA_SUFFIXES[file_format]


def hidden(name: str) -> bool:
    """Names Spark itself ignores: `_SUCCESS`, `.crc` files, `_temporary` folders."""
    return name.startswith(("_", "."))


def data_files(config: InputConfig) -> tuple[str | list[str], list[str]]:
    """The paths to read for a local CSV or Parquet folder and the files skipped: files that
    are not data files (`is_data_file`) are left out, counted and logged; a data file beside
    `name=value` partition folders (which Spark would not read as part of any partition) is an
    `InputError`. `input.path` itself when nothing is skipped, it is a file or not local, or
    `input.options.pathGlobFilter` chooses the files."""
    chosen = any(k.lower() == "pathglobfilter" for k in config.options)
    globbed = is_glob(config.path) and "://" not in config.path
    roots = glob_matches(config.path) if globbed else [Path(config.path)]
    if "://" in config.path or not (globbed or roots[0].is_dir()) or (
            config.format == "csv" and chosen):
        return config.path, []
    keep: list[str] = []
    skipped: list[str] = []
    for root in roots:
        if root.is_file():
            (keep if is_data_file(root.name, config.format) else skipped).append(str(root))
        else:
            walk_data_files(config, root, keep, skipped)
    if not skipped and not globbed:
        return config.path, []
    log_skipped(config, keep, skipped)
    return keep, skipped


def walk_data_files(config: InputConfig, root: Path, keep: list[str], skipped: list[str]
                    ) -> None:
    """Add the data files below folder `root` to `keep`, the other files to `skipped`."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not hidden(d))
        names = sorted(f for f in files if not hidden(f))
        data = [f for f in names if is_data_file(f, config.format)]
        partitions = [d for d in dirs if PARTITION_DIR.match(d)]
        if data and partitions:
            raise InputError(
                f"input.path {config.path}: {Path(folder, data[0])} sits beside partition "
                f"folders ({partitions[0]}, ...), so it has no "
                f"{partitions[0].split('=')[0]} value; move it into a partition folder or out "
                f"of input.path")
        keep += [str(Path(folder, f)) for f in data]
        skipped += [str(Path(folder, f)) for f in names if f not in data]


def log_skipped(config: InputConfig, keep: list[str], skipped: list[str]) -> None:
    """Log the skipped files; an `InputError` when no data file is left."""
    if skipped:
        log.warning("input.path %s: skipped %d files that are not %s data files (by name: %s), "
                    "e.g. %s", config.path, len(skipped), config.format,
                    "/".join(DATA_SUFFIXES[config.format]), ", ".join(skipped[:5]))
    if not keep:
        only = f" (only {', '.join(skipped[:5])})" if skipped else ""
        raise InputError(f"input.path {config.path} holds no {config.format} data files{only}")


def file_reader(spark: SparkSession, config: InputConfig, paths: str | list[str]
                ) -> DataFrameReader:
    """A reader for `paths`: given a list of files, partition columns are still inferred from
    the folders below `input.path` (`basePath`; for a glob, its folder before the first
    wildcard)."""
    if isinstance(paths, str):
        return spark.read
    return spark.read.option("basePath", glob_base(config.path) if is_glob(config.path)
                             else config.path)


GLOB = re.compile(r"[*?\[{]")


def is_glob(path: str) -> bool:
    """Whether `path` holds a Hadoop glob wildcard (`*`, `?`, `[...]`, `{a,b}`)."""
    return bool(GLOB.search(path))


def glob_base(path: str) -> str:
    """The folder of a glob before its first wildcard (`/logs/dt=*/x.csv` -> `/logs`)."""
    parts = Path(path).parts
    fixed = [p for p in parts[:next(i for i, p in enumerate(parts) if is_glob(p))]]
    return str(Path(*fixed)) if fixed else "."


def expand_braces(pattern: str) -> list[str]:
    """`{a,b}` alternatives expanded, as Hadoop globs read them (`x{1,2}` -> x1, x2)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [p for alt in match.group(1).split(",") for p in expand_braces(head + alt + tail)]


def glob_matches(path: str) -> list[Path]:
    """Local files and folders a glob `input.path` matches, in order; hidden names excluded."""
    found = {Path(p) for pattern in expand_braces(path) for p in glob.glob(pattern)}
    return sorted(p for p in found if not hidden(p.name))


def read_parquet(spark: SparkSession, config: InputConfig, paths: str | list[str],
                 facts: dict[str, Any]) -> DataFrame:
    """Parquet files as one DataFrame. Columns whose files differ only in integer width (int32
    in some, int64 in others) or float width are read as bigint or double (`widened_types`),
    logged and counted into `facts["widened_columns"]` (column -> the type read and how many
    files had a narrower one); Spark alone would fail or read one file's type."""
    args = [paths] if isinstance(paths, str) else paths
    raw = file_reader(spark, config, paths).parquet(*args)
    files = parquet_files(paths)
    widened = widened_types(files)
    if not widened:
        return raw
    facts["widened_columns"] = {c: {"to": kind, "files": n} for c, (kind, n) in widened.items()}
    log.warning("input.path %s: columns of different widths across %d Parquet files read as "
                "the wider type: %s", mask_value(config.path), len(files),
                ", ".join(f"{c} -> {kind} ({n} files narrower)"
                          for c, (kind, n) in widened.items()))
    schema = T.StructType([
        T.StructField(f.name, SPARK_TYPES[widened[f.name][0]], f.nullable,
                      f.metadata) if f.name in widened else f
        for f in raw.schema.fields])
    return file_reader(spark, config, paths).schema(schema).parquet(*args)


def parquet_files(paths: str | list[str]) -> list[Path]:
    """The local Parquet data files `paths` (a file, a folder or a list of files) reads; none
    for a URI."""
    if isinstance(paths, list):
        return [Path(p) for p in paths]
    root = Path(paths)
    if "://" in paths or not root.exists():
        return []
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and is_data_file(p.name, "parquet")
                  and not any(hidden(part) for part in p.relative_to(root).parts))


SPARK_TYPES: dict[str, T.DataType] = {"bigint": T.LongType(), "double": T.DoubleType()}
WIDER = {"bigint": ("int8", "int16", "int32", "int64"), "double": ("halffloat", "float", "double")}


def widened_types(files: list[Path]) -> dict[str, tuple[str, int]]:
    """Column -> (the Spark type to read it as, files with a narrower type) for the columns
    whose Parquet footers disagree only in the width of a signed integer or a float. Files
    whose footer cannot be read are left to Spark's own error."""
    import pyarrow.parquet as pq

    kinds: dict[str, list[str]] = {}
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (OSError, ValueError):
            continue
        for name, kind in zip(schema.names, schema.types, strict=True):
            kinds.setdefault(name, []).append(str(kind))
    widened: dict[str, tuple[str, int]] = {}
    for name, found in kinds.items():
        for spark_type, family in WIDER.items():
            if len(set(found)) > 1 and set(found) <= set(family):
                widest = max(found, key=family.index)
                widened[name] = (spark_type, sum(kind != widest for kind in found))
    return widened


def shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


STANDARD_NAMES = {"timestamp": "ts", "count": "searches"}
ABSENT = {"session_id": (None, "string"), "timestamp": (None, "timestamp"),
          "clicks": (0, "bigint"), "add_to_bags": (0, "bigint"), "purchases": (0, "bigint"),
          "count": (1, "bigint"), "results_shown": (None, "bigint")}


def standardize(raw: DataFrame, config: InputConfig, facts: dict[str, Any]) -> DataFrame:
    """Rename the `input.columns` to the standard names. Only the query column is required:
    a column left at its default name and not in the input is null (session_id, timestamp),
    0 (counts) or 1 (`count`, the row's weight, read as `searches`); a column mapped to another
    name must be present. `facts["interactions"]` says whether any count column is present."""
    mapping = dataclasses.asdict(config.columns)
    defaults = dataclasses.asdict(ColumnsConfig())
    require_unique_columns(raw.columns)
    fields = {f.name: f.dataType for f in raw.schema.fields}
    missing = [key for key, source in mapping.items() if source not in fields]
    required = [key for key in missing if key not in ABSENT or mapping[key] != defaults[key]]
    if required:
        raise InputError(
            f"input lacks mapped column {mapping[required[0]]} (input.columns.{required[0]}); "
            f"columns present: {', '.join(raw.columns)}{separator_hint(raw.columns)}")
    note_absent(missing, facts)
    for key, source in mapping.items():
        if source in fields and not isinstance(fields[source], ATOMIC):
            raise InputError(
                f"input column {source!r} (input.columns.{key}) has type "
                f"{fields[source].simpleString()}; expected text, a number or a timestamp")
    selected = [standard_column(key, source, fields) for key, source in mapping.items()]
    filters = [filter_text(raw, c).alias(c) for c in config.filter_columns]
    events = raw.select(*selected, *filters)
    return with_flags(events.select(
        F.col("query").cast("string").alias("query"),
        F.col("session_id").cast("string").alias("session_id"),
        "ts",
        "searches",
        *COUNT_COLUMNS,
        "results_shown",
        *config.filter_columns,
    ), config.filter_columns)


def note_absent(keys: list[str], facts: dict[str, Any]) -> None:
    """Record and log which standard columns the input lacks."""
    facts["interactions"] = not set(COUNT_COLUMNS) <= set(keys)
    if keys:
        log.info("input has no column for %s: read as null (session_id, timestamp), 0 (counts) "
                 "or 1 (count)", ", ".join(f"input.columns.{k}" for k in keys))
    if not facts["interactions"]:
        log.warning("input has no interaction columns (%s): queries are counted and clustered; "
                    "the success and recommend stages will be skipped", ", ".join(COUNT_COLUMNS))


def standard_column(key: str, source: str, fields: dict[str, T.DataType]) -> Column:
    """Input column `source` (config key `key`) under its standard name, or its `ABSENT`
    value when the input lacks it; numeric timestamps are epoch seconds or milliseconds."""
    name = STANDARD_NAMES.get(key, key)
    if source not in fields:
        value, kind = ABSENT[key]
        return F.lit(value).cast(kind).alias(name)
    if key == "timestamp" and isinstance(fields[source], T.NumericType):
        return epoch_timestamp(F.col(quoted(source))).alias(name)
    return F.col(quoted(source)).alias(name)


def separator_hint(columns: list[str]) -> str:
    """A hint to set `input.options.sep` when the header was read as one field holding a tab or
    a semicolon, else ''."""
    if len(columns) != 1:
        return ""
    for sep, shown in (("\t", "\\t"), (";", ";")):
        if sep in columns[0]:
            return (f" (the header was read as one field holding '{shown}': set "
                    f"input.options.sep, e.g. --set 'input.options.sep={shown}')")
    return ""


EPOCH_MILLIS_FROM = 1e11


def epoch_timestamp(number: Column) -> Column:
    """Epoch seconds, or milliseconds for numbers from 1e11 on (1973-03 in milliseconds, the
    year 5138 in seconds), as a timestamp."""
    return F.when(number >= EPOCH_MILLIS_FROM, F.timestamp_millis(number.cast("long"))) \
        .otherwise(F.timestamp_seconds(number))


def parse_timestamp(text: Column) -> Column:
    """A timestamp from ISO-8601 text (with `Z`, `+00:00` or `+0000` offsets, or none: the
    session time zone) or from epoch seconds or milliseconds; null where none of these reads
    it."""
    epoch = epoch_timestamp(text.try_cast("double"))
    return F.when(text.rlike(r"^\s*\d+(\.\d+)?\s*$"), epoch).otherwise(text.try_cast("timestamp"))


def with_flags(events: DataFrame, filter_columns: list[str]) -> DataFrame:
    """Standard search events: `searches` (the weight of the row, default 1), counts as
    non-negative longs, the `EXPOSURE_COLUMNS` (null where the source has none) and `ts` as a
    timestamp; invalid values become 0 or null and are flagged in the `FLAGS` columns.
    `actor` is who typed the search (whose typing fragments are folded; default the session)
    and `attributed_events` how many logged UBI events the search holds (default 0)."""
    parsed = {c: F.col(c).try_cast("long") for c in COUNT_COLUMNS}
    ts = parse_timestamp(F.col("ts")) if dict(events.dtypes)["ts"] == "string" \
        else F.col("ts").try_cast("timestamp")
    invalid = reduce(operator.add, [(F.col(c).isNotNull() & parsed[c].isNull()).cast("int")
                                    for c in COUNT_COLUMNS])
    negative = reduce(operator.add, [F.coalesce((parsed[c] < 0).cast("int"), F.lit(0))
                                     for c in COUNT_COLUMNS])
    present = set(events.columns)
    searches = F.col("searches").try_cast("long") if "searches" in present else F.lit(1)
    exposure = [(F.col(c) if c in present else F.lit(None)).try_cast(kind).alias(c)
                for c, kind in EXPOSURE_COLUMNS.items()]
    actor = F.col("actor") if "actor" in present else F.col("session_id")
    attributed = F.col("attributed_events") if "attributed_events" in present else F.lit(0)
    return events.select(
        "query", "session_id",
        ts.alias("ts"),
        F.greatest(F.coalesce(searches, F.lit(1)), F.lit(0)).cast("long").alias("searches"),
        *[F.greatest(F.coalesce(parsed[c], F.lit(0)), F.lit(0)).alias(c) for c in COUNT_COLUMNS],
        *exposure,
        actor.cast("string").alias("actor"),
        attributed.cast("long").alias("attributed_events"),
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


def require_path(path: str, key: str) -> None:
    """Raise naming `key` when local `path` does not exist, or is a glob that matches nothing."""
    if "://" in path:
        return
    if is_glob(path) and not Path(path).exists():
        if not glob_matches(path):
            raise InputError(f"{key} {path} matches no files")
    elif not Path(path).exists():
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
        p for p in root.rglob("*")
        if p.is_file() and not hidden(p.name) and is_data_file(p.name, "parquet"))
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
    return f"{config.format} {mask_value(config.path)}"


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
