"""A run: its id, timings, counts and the `runs` manifest table."""

from __future__ import annotations

import json
import logging
import math
import platform
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.runtime.config import Config, ConfigError, to_dict
from querylens.runtime.tables import qualified, read_run_table, table_exists, write_run_table

log = logging.getLogger("querylens")

TABLE = "runs"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
LATEST_SUFFIX = "_latest"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the results."""
    import numpy
    import pyspark
    import sklearn

    found = {"python": platform.python_version(), "pyspark": pyspark.__version__,
             "numpy": numpy.__version__, "scikit-learn": sklearn.__version__}
    for name in ("torch", "transformers", "sentence_transformers"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


@dataclass
class Run:
    """State of one pipeline run, recorded in the `runs` manifest as each invocation ends.

    `Run.open` continues a recorded run: its timings, counts and facts are read back from `runs`
    and merged, so stages run in separate processes add up to one manifest row.
    """

    spark: SparkSession
    config: Config
    run_id: str = field(default_factory=new_run_id)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not RUN_ID.match(self.run_id):
            raise ConfigError(
                f"run id must be 1-128 of [A-Za-z0-9_.:-] starting with a letter or digit, "
                f"got {self.run_id!r}"
            )

    @classmethod
    def open(cls, spark: SparkSession, config: Config, run_id: str | None = None) -> Run:
        """A new run, or the recorded run `run_id` with its manifest read back from `runs`."""
        run = cls(spark, config) if run_id is None else cls(spark, config, run_id)
        recorded = run.recorded()
        if recorded is not None:
            run.started_at = recorded["started_at"] or run.started_at
            run.timings = json.loads(recorded["timings_json"] or "{}")
            run.counts = json.loads(recorded["counts_json"] or "{}")
            run.facts = json.loads(recorded["facts_json"] or "{}")
            log.info("[%s] continuing the recorded run (stages done: %s)", run.run_id,
                     ", ".join(run.timings) or "none")
        return run

    def recorded(self) -> Any:
        """This run's `runs` row, or None when it has none."""
        if not table_exists(self.spark, self.database, TABLE):
            return None
        return read_run_table(self.spark, self.database, TABLE, self.run_id).first()

    @property
    def database(self) -> str:
        return self.config.run.database

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Log the start and end of a stage and record its duration."""
        log.info("[%s] %s: started", self.run_id, name)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.timings[name] = round(seconds, 3)
        log.info("[%s] %s: done in %.1fs", self.run_id, name, seconds)

    def read(self, table: str) -> DataFrame:
        """This run's rows of `table`, without run_id."""
        return read_run_table(self.spark, self.database, table, self.run_id).drop("run_id")

    def has_rows(self, table: str) -> bool:
        """Whether `table` exists and holds rows of this run."""
        return table_exists(self.spark, self.database, table) and bool(
            read_run_table(self.spark, self.database, table, self.run_id).limit(1).count())

    def write(self, table: str, df: DataFrame) -> int:
        """Write this run's rows of `table` (checked against its spec) and record the count."""
        rows = write_run_table(df, self.database, table, self.run_id, self.config.run.table_format)
        self.counts[table] = rows
        log.info("[%s] wrote %s rows to %s.%s", self.run_id, rows, self.database, table)
        return rows

    def write_metrics(self, rows: list[tuple[str, str, str, float]]) -> int:
        """The one writer of `model_metrics`: replace this run's rows of the models in `rows`.

        Rows of other models (written by other stages) are kept; a non-finite value is refused.
        """
        models = {model for model, *_ in rows}
        kept: dict[tuple[str, str, str], float] = {}
        if table_exists(self.spark, self.database, METRICS_TABLE):
            for r in self.read(METRICS_TABLE).collect():
                if r["model"] not in models:
                    kept[(r["model"], r["split"], r["metric"])] = r["value"]
        for model, split, metric, value in rows:
            if value is None or not math.isfinite(value):
                raise ValueError(f"metric {model}/{split}/{metric} is {value}; leave it out")
            kept[(model, split, metric)] = float(value)
        records = [(*key, value) for key, value in sorted(kept.items())]
        return self.write(METRICS_TABLE, self.spark.createDataFrame(records, METRICS_SCHEMA))

    def record(self, status: str) -> None:
        """Write this run's row of the `runs` manifest."""
        row = {
            "status": status,
            "started_at": self.started_at,
            "finished_at": None if status == "running" else datetime.now(UTC),
            "config_json": json.dumps(to_dict(self.config), sort_keys=True),
            "versions_json": json.dumps(versions(), sort_keys=True),
            "timings_json": json.dumps(self.timings, sort_keys=True),
            "counts_json": json.dumps(self.counts, sort_keys=True),
            "facts_json": json.dumps(self.facts, sort_keys=True, default=str),
        }
        df = self.spark.createDataFrame([row], schema=MANIFEST_SCHEMA)
        write_run_table(df, self.database, TABLE, self.run_id, self.config.run.table_format)


METRICS_TABLE = "model_metrics"
METRICS_SCHEMA = "model string, split string, metric string, value double"

MANIFEST_SCHEMA = (
    "status string, started_at timestamp, finished_at timestamp, config_json string, "
    "versions_json string, timings_json string, counts_json string, facts_json string"
)


def completed_runs(spark: SparkSession, database: str) -> list[tuple[str, dict[str, int]]]:
    """(run_id, table row counts) of every completed run, the most recently finished first."""
    if not table_exists(spark, database, TABLE):
        return []
    rows = (spark.table(qualified(database, TABLE)).where("status = 'completed'")
            .orderBy(F.col("finished_at").desc(), F.col("run_id").desc())
            .select("run_id", "counts_json").collect())
    return [(r["run_id"], json.loads(r["counts_json"] or "{}")) for r in rows
            if RUN_ID.match(r["run_id"])]


def completed_run_ids(spark: SparkSession, database: str) -> list[str]:
    """Ids of the runs recorded as completed in `database.runs`, the most recent first.

    Readers should look only at these runs: a run that is running, failed or was killed
    may have replaced some of its partitions and not others.
    """
    return [run_id for run_id, _ in completed_runs(spark, database)]


def latest_completed_run(spark: SparkSession, database: str) -> str | None:
    """The most recently finished completed run's id, or None."""
    ids = completed_run_ids(spark, database)
    return ids[0] if ids else None


def publish_latest_views(spark: SparkSession, database: str) -> dict[str, str]:
    """Point `<table>_latest` at the newest completed run that wrote `table`; return the map.

    Views of tables that no completed run wrote are dropped, so a reader of `*_latest` never
    sees a run that is running, failed or was killed.
    """
    targets: dict[str, str] = {}
    for run_id, counts in completed_runs(spark, database):
        for table in counts:
            targets.setdefault(table, run_id)
    for table, run_id in sorted(targets.items()):
        if table_exists(spark, database, table):
            spark.sql(
                f"CREATE OR REPLACE VIEW {qualified(database, table + LATEST_SUFFIX)} AS "
                f"SELECT * FROM {qualified(database, table)} WHERE run_id = '{run_id}'"
            )
    for view in spark.catalog.listTables(database):
        base = view.name.removesuffix(LATEST_SUFFIX)
        if view.tableType == "VIEW" and view.name.endswith(LATEST_SUFFIX) and base not in targets:
            spark.sql(f"DROP VIEW IF EXISTS {qualified(database, view.name)}")
    return targets
