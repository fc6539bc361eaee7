"""Catalog tables: every output is partitioned by run_id and overwritten per run."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.config import require_identifier

log = logging.getLogger("querylens")


def qualified(database: str, table: str) -> str:
    """`database.table` after checking both are plain identifiers."""
    return f"{require_identifier('run.database', database)}.{require_identifier('table', table)}"


def table_exists(spark: SparkSession, database: str, table: str) -> bool:
    return spark.catalog.tableExists(qualified(database, table))


def write_run_table(
    df: DataFrame, database: str, table: str, run_id: str, table_format: str = "parquet"
) -> int:
    """Replace this run's partition of `database.table` with `df`; return the rows written.

    A write with new columns adds them to the table (earlier runs read them as null); a write
    that lacks some of the table's columns is refused.
    """
    spark = df.sparkSession
    name = qualified(database, table)
    rows = df.drop("run_id") if "run_id" in df.columns else df
    rows = rows.withColumn("run_id", F.lit(run_id))
    if not spark.catalog.tableExists(name):
        rows.write.format(table_format).partitionBy("run_id").saveAsTable(name)
    else:
        existing = spark.table(name).columns
        missing = sorted(set(existing) - set(rows.columns))
        if missing:
            raise ValueError(f"table {name} has columns {existing}; this write lacks {missing}")
        extra = [f for f in rows.schema.fields if f.name not in existing]
        if extra:
            spark.sql(f"ALTER TABLE {name} ADD COLUMNS ("
                      + ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in extra) + ")")
            log.warning("table %s: added columns %s", name, [f.name for f in extra])
        rows.select(*spark.table(name).columns).write.insertInto(name, overwrite=True)
    return spark.table(name).where(F.col("run_id") == run_id).count()


def append_table(df: DataFrame, database: str, table: str, table_format: str = "parquet") -> None:
    """Append rows to an unpartitioned table, creating it on first use."""
    spark = df.sparkSession
    name = qualified(database, table)
    if not spark.catalog.tableExists(name):
        df.write.format(table_format).saveAsTable(name)
    else:
        df.select(*spark.table(name).columns).write.insertInto(name)


def read_run_table(spark: SparkSession, database: str, table: str, run_id: str) -> DataFrame:
    """This run's rows of `database.table`."""
    return spark.table(qualified(database, table)).where(F.col("run_id") == run_id)
