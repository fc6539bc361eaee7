"""Catalog tables: per-run tables are partitioned by run_id and each run replaces its partition;
writes through a spec (`runtime.specs`) are checked and cast to it first."""

from __future__ import annotations

import logging
import re
import uuid

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.runtime.config import require_identifier
from querylens.runtime.errors import ConfigError, DataError
from querylens.runtime.specs import TABLES, TableSpec

log = logging.getLogger("querylens")

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def require_run_id(run_id: str) -> str:
    """`run_id` when it matches the one run id pattern (`RUN_ID`); else a `ConfigError`.

    Every run id is checked against it before any use (CLI, `Run`, table writes), so an id can
    be quoted in SQL and used as a file name without escaping and never names a parent folder.
    """
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ConfigError(
            f"run id must be 1-128 of [A-Za-z0-9_.:-] starting with a letter or digit, "
            f"got {run_id!r}")
    return run_id


def qualified(database: str, table: str) -> str:
    """`database.table` after checking both are plain identifiers."""
    return f"{require_identifier('run.database', database)}.{require_identifier('table', table)}"


def table_exists(spark: SparkSession, database: str, table: str) -> bool:
    return spark.catalog.tableExists(qualified(database, table))


def conform(df: DataFrame, spec: TableSpec) -> DataFrame:
    """`df` with exactly `spec`'s columns, in its order and types; a missing or unexpected
    column is a `DataError` naming it."""
    given = [c for c in df.columns if c != "run_id"]
    missing = [c for c in spec.names if c not in given]
    extra = [c for c in given if c not in spec.names]
    if missing or extra:
        raise DataError(f"rows for table {spec.name} do not match its spec: "
                        f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}")
    types = dict(df.dtypes)
    return df.select(*[F.col(name) if types[name] == kind else F.col(name).cast(kind).alias(name)
                       for name, kind in spec.columns])


def write_run_table(
    df: DataFrame, database: str, table: str, run_id: str, table_format: str = "parquet"
) -> int:
    """Replace this run's partition of `database.table` with `df`; return the rows written.

    A table with a spec gets exactly the spec's columns. Otherwise a write with new columns adds
    them to the table (earlier runs read them as null). A column the table has but the write
    lacks is refused, unless the spec retired it: then the run's rows hold null there.
    """
    require_run_id(run_id)
    spec = TABLES.get(table)
    rows = conform(df, spec) if spec else df.drop("run_id") if "run_id" in df.columns else df
    rows = rows.withColumn("run_id", F.lit(run_id))
    spark = df.sparkSession
    name = qualified(database, table)
    if not spark.catalog.tableExists(name):
        rows.write.format(table_format).partitionBy("run_id").saveAsTable(name)
    else:
        existing = spark.table(name).schema
        missing = [f for f in existing.fields if f.name not in rows.columns]
        if missing and not spec:
            raise DataError(f"table {name} has columns {[f.name for f in existing.fields]}; "
                            f"this write lacks {[f.name for f in missing]}")
        if missing:
            log.warning("table %s: retired columns %s are written as null", name,
                        [f.name for f in missing])
            rows = rows.select("*", *[F.lit(None).cast(f.dataType).alias(f.name)
                                      for f in missing])
        extra = [f for f in rows.schema.fields if f.name not in existing.names]
        if extra:
            spark.sql(f"ALTER TABLE {name} ADD COLUMNS ("
                      + ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in extra) + ")")
            log.warning("table %s: added columns %s", name, [f.name for f in extra])
        replace_partition(rows, name, run_id)
    return spark.table(name).where(F.col("run_id") == run_id).count()


def replace_partition(rows: DataFrame, name: str, run_id: str) -> None:
    """Replace partition `run_id` of the existing table `name` with `rows` (all its rows: an
    empty `rows` empties it).

    The partition is named in the statement (`INSERT OVERWRITE ... PARTITION (run_id = ...)`),
    so only it is replaced whatever `spark.sql.sources.partitionOverwriteMode` the session has:
    with `STATIC`, an `insertInto(overwrite=True)` would replace every run's rows.
    """
    spark = rows.sparkSession
    columns = [c for c in spark.table(name).columns if c != "run_id"]
    view = f"querylens_write_{uuid.uuid4().hex}"
    rows.select(*columns).createOrReplaceTempView(view)
    try:
        spark.sql(f"INSERT OVERWRITE TABLE {name} PARTITION (run_id = '{require_run_id(run_id)}') "
                  f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM {view}")
    finally:
        spark.catalog.dropTempView(view)


def clear_run_table(spark: SparkSession, database: str, table: str, run_id: str) -> bool:
    """Remove run `run_id`'s rows from `database.table` (if the table exists); return whether
    the table exists."""
    name = qualified(database, table)
    if not spark.catalog.tableExists(name):
        return False
    empty = spark.createDataFrame([], spark.table(name).schema)
    replace_partition(empty, name, run_id)
    return True


def append_table(df: DataFrame, database: str, table: str, table_format: str = "parquet") -> None:
    """Append rows to an unpartitioned table, creating it on first use."""
    spec = TABLES.get(table)
    rows = conform(df, spec) if spec else df
    spark = df.sparkSession
    name = qualified(database, table)
    if not spark.catalog.tableExists(name):
        rows.write.format(table_format).saveAsTable(name)
    else:
        rows.select(*spark.table(name).columns).write.insertInto(name)


def read_run_table(spark: SparkSession, database: str, table: str, run_id: str) -> DataFrame:
    """This run's rows of `database.table`; for a table with a spec, only the spec's columns
    (and run_id), so a retired column of older runs never reaches a reader."""
    rows = spark.table(qualified(database, table)).where(F.col("run_id") == run_id)
    spec = TABLES.get(table)
    if spec is None:
        return rows
    return rows.select(*[c for c in [*spec.names, "run_id"] if c in rows.columns])
