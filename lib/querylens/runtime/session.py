"""The one SparkSession factory, built from config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from querylens.runtime.catalog import catalog_conf, path_or_uri
from querylens.runtime.config import Config


def spark_conf(config: Config) -> dict[str, str]:
    """Spark settings implied by the config, with `spark.conf` entries taking precedence.

    CSV column pruning is off: with it, Spark flags a row with the wrong number of fields only
    when a query reads every column, so ingest could not drop such rows reliably."""
    warehouse = path_or_uri(config.run.warehouse_dir)
    metastore = Path(config.run.metastore_dir).resolve()
    conf = {
        "spark.sql.warehouse.dir": warehouse,
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.spark.arrow_batch_size),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.csv.parser.columnPruning.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={metastore}",
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true"
        ),
    }
    conf.update(catalog_conf(config.run.table_format))
    conf.update(config.spark.conf)
    return conf


def build_session(config: Config) -> SparkSession:
    """Create (or reuse) the SparkSession the config describes."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    Path(config.run.metastore_dir).mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.appName(config.spark.app_name)
    if config.spark.master:
        builder = builder.master(config.spark.master)
    for key, value in spark_conf(config).items():
        builder = builder.config(key, value)
    if config.spark.hive_metastore:
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {config.run.database}")
    return spark
