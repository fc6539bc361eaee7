"""The one SparkSession factory, built from config."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark import SparkContext
from pyspark.sql import SparkSession

from querylens.runtime.catalog import catalog_conf, path_or_uri
from querylens.runtime.config import Config
from querylens.runtime.errors import MetastoreBusyError

log = logging.getLogger(__name__)

SHARED_DIR_KEY = "querylens.shared_dir"


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


def is_connect(spark: SparkSession) -> bool:
    """Whether `spark` is a Spark Connect client session (no SparkContext, RDDs or py4j)."""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:
        return False
    return isinstance(spark, ConnectSession)


def default_parallelism(spark: SparkSession) -> int:
    """The cluster's default task parallelism; over Spark Connect, `spark.default.parallelism`
    when set, else the shuffle partitions."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    value = spark.conf.get("spark.default.parallelism", None)
    return int(value or spark.conf.get("spark.sql.shuffle.partitions") or 1)


def shared_dir(config: Config) -> str:
    """Where objects too large for a UDF closure are shared with workers over Spark Connect."""
    return path_or_uri(str(Path(config.run.output_dir) / "_shared"))


def build_session(config: Config) -> SparkSession:
    """Create (or reuse) the SparkSession the config describes: a Spark Connect session when
    `spark.remote` is set, else a classic one."""
    if config.spark.remote:
        return build_connect_session(config)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    Path(config.run.metastore_dir).mkdir(parents=True, exist_ok=True)
    require_free_metastore(config)
    builder = SparkSession.builder.appName(config.spark.app_name)
    if config.spark.master:
        builder = builder.master(config.spark.master)
    for key, value in spark_conf(config).items():
        builder = builder.config(key, value)
    if config.spark.hive_metastore:
        builder = builder.enableHiveSupport()
    builder = builder.config(SHARED_DIR_KEY, shared_dir(config))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {config.run.database}")
    return spark


DERBY_URL = "spark.hadoop.javax.jdo.option.ConnectionURL"


def derby_metastore(conf: dict[str, str]) -> Path | None:
    """The embedded Derby metastore folder the Spark settings use, or None (a remote metastore
    or another database)."""
    if conf.get("spark.hadoop.hive.metastore.uris"):
        return None
    url = conf.get(DERBY_URL, "")
    if not url.startswith("jdbc:derby:"):
        return None
    parts = [p for p in url.removeprefix("jdbc:derby:").split(";") if p]
    names = [p.removeprefix("databaseName=") for p in parts
             if p.startswith("databaseName=") or "=" not in p]
    return Path(names[0]) if names and not names[0].startswith(("memory:", "//")) else None


def derby_lock_holder(folder: Path) -> str | None:
    """Who holds Derby's exclusive lock on the database `folder` (`dbex.lck`, a POSIX lock
    Derby takes while it has the database booted): 'process N', 'another process', or None
    when it is free. A lock left by a process that died is free."""
    try:
        import fcntl
    except ImportError:
        return None
    lock = folder / "dbex.lck"
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    except OSError:
        inode = f":{os.fstat(fd).st_ino} "
        try:
            holders = [line.split()[4] for line in Path("/proc/locks").read_text().splitlines()
                       if inode in line and "POSIX" in line]
        except OSError:
            holders = []
        return f"process {holders[0]}" if holders else "another process"
    finally:
        os.close(fd)


def busy_message(folder: Path, holder: str) -> str:
    return (f"another run holds the embedded Derby metastore {folder} ({holder}): wait for it "
            f"to finish, or give this run its own run.metastore_dir and run.warehouse_dir, or use "
            f"a shared Hive metastore (spark.conf spark.hadoop.hive.metastore.uris)")


def require_free_metastore(config: Config) -> None:
    """Fail in one line, before Spark starts, when another process has the embedded Derby
    metastore booted (Derby allows one JVM per database; a second one fails with XSDB6 and
    thousands of lines of Java traces). A session already running in this process is reused
    by `getOrCreate`, so it is not checked."""
    if not config.spark.hive_metastore or SparkContext._active_spark_context is not None:
        return
    folder = derby_metastore(spark_conf(config))
    holder = derby_lock_holder(folder) if folder is not None else None
    if folder is not None and holder is not None:
        raise MetastoreBusyError(busy_message(folder, holder))


def build_connect_session(config: Config) -> SparkSession:
    """A Spark Connect session to `spark.remote`. Settings the server fixes at its start
    (warehouse, metastore, JVM options) cannot change from a client: they are skipped, named
    in one log line, and must be given to the server."""
    assert config.spark.remote
    spark = SparkSession.builder.remote(config.spark.remote).getOrCreate()
    wanted = {**spark_conf(config), SHARED_DIR_KEY: shared_dir(config)}
    fixed = []
    for key, value in wanted.items():
        if spark.conf.isModifiable(key) or key.startswith("querylens."):
            spark.conf.set(key, value)
        elif spark.conf.get(key, None) != value:
            fixed.append(key)
    if fixed:
        log.info("Spark Connect %s: the server's own %s apply (set at server start)",
                 config.spark.remote, ", ".join(sorted(fixed)))
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {config.run.database}")
    return spark
