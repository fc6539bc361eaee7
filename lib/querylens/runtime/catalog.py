"""Output table formats and the Spark catalog settings each one needs.

`parquet` and `orc` are built into Spark: tables live in the session catalog (a Hive metastore;
embedded Derby locally). `delta` and `iceberg` need their jars on the cluster (`--packages` or
the platform's runtime) and the session catalog replaced, which `catalog_conf` supplies; the
config's own `spark.conf` entries still win.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from querylens.runtime.errors import ConfigError

TABLE_FORMATS = ("parquet", "orc", "delta", "iceberg")

CATALOG_CONF: dict[str, dict[str, str]] = {
    "delta": {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    },
    "iceberg": {
        "spark.sql.extensions":
            "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.catalog.spark_catalog": "org.apache.iceberg.spark.SparkSessionCatalog",
        "spark.sql.catalog.spark_catalog.type": "hive",
    },
}

PACKAGES = {
    "delta": "io.delta:delta-spark_2.13:<delta version built for your Spark>",
    "iceberg": "org.apache.iceberg:iceberg-spark-runtime-<spark major.minor>_2.13:<version>",
}


def catalog_conf(table_format: str) -> dict[str, str]:
    """Spark settings the session catalog needs to create and write `table_format` tables.

    None on Databricks (`DATABRICKS_RUNTIME_VERSION` set), whose runtime configures Delta and
    its catalog itself.
    """
    if table_format not in TABLE_FORMATS:
        raise ConfigError(f"table format must be one of {', '.join(TABLE_FORMATS)}, "
                         f"got {table_format!r}")
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return {}
    return dict(CATALOG_CONF.get(table_format, {}))


def path_or_uri(location: str) -> str:
    """A URI (s3a://, hdfs://, abfss://, dbfs:/, file:/) unchanged; a local path made absolute."""
    scheme = urlparse(location).scheme
    if len(scheme) > 1:
        return location
    return str(Path(location).resolve())
