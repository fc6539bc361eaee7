"""A run: its id, timings, counts and the `runs` manifest table."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.runtime.config import Config, to_dict
from querylens.runtime.errors import first_line
from querylens.runtime.specs import TABLES
from querylens.runtime.tables import (
    RUN_ID,
    clear_run_table,
    qualified,
    read_run_table,
    require_run_id,
    table_exists,
    write_run_table,
)

log = logging.getLogger("querylens")

TABLE = "runs"
__all__ = ["RUN_ID", "Run", "completed_run_ids", "completed_runs", "latest_completed_run",
           "publish_latest_views", "require_run_id"]
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

    written: set[str] = field(default_factory=set, repr=False)
    """Tables (and `model_metrics` models, as `model_metrics:<model>`) written by this
    process since `begin_writes`; not recorded."""

    def __post_init__(self) -> None:
        require_run_id(self.run_id)

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
        self.written.add(table)
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
        self.written.update(f"{METRICS_TABLE}:{model}" for model in models)
        return self.write(METRICS_TABLE, self.spark.createDataFrame(records, METRICS_SCHEMA))

    def begin_writes(self) -> None:
        """Start tracking what a stage writes (`finish_writes` clears what it did not)."""
        self.written = set()

    def finish_writes(self, stage: str, tables: tuple[str, ...]) -> list[str]:
        """Clear this run's rows of every table in `tables` (a stage's `writes`) that the stage
        did not write since `begin_writes`; return the tables cleared.

        So a rerun replaces all of the run's rows of a stage's tables, also those it now writes
        nothing to (a sweep turned off, a skipped stage): their rows are removed and the table
        leaves the run's `counts`, so its `_latest` view shows an older run that wrote it.
        `model_metrics` is shared: only the rows of the models this stage wrote before (kept in
        the facts under `model_metrics`) and not this time are removed.
        """
        cleared: list[str] = []
        for table in tables:
            if table == METRICS_TABLE:
                if self._finish_metrics(stage):
                    cleared.append(table)
            elif table not in self.written and table in TABLES and TABLES[table].per_run:
                if clear_run_table(self.spark, self.database, table, self.run_id):
                    cleared.append(table)
                self.counts.pop(table, None)
        if cleared:
            log.info("[%s] %s: cleared the run's rows of %s (not written this time)",
                     self.run_id, stage, ", ".join(cleared))
        return cleared

    def _finish_metrics(self, stage: str) -> bool:
        prefix = f"{METRICS_TABLE}:"
        models = sorted(t.removeprefix(prefix) for t in self.written if t.startswith(prefix))
        owners = self.facts.setdefault(METRICS_TABLE, {})
        stale = set(owners.get(stage, [])) - set(models)
        if models:
            owners[stage] = models
        else:
            owners.pop(stage, None)
        if not stale or not table_exists(self.spark, self.database, METRICS_TABLE):
            return False
        kept = [tuple(r) for r in self.read(METRICS_TABLE).select("model", "split", "metric",
                                                                   "value").collect()
                if r["model"] not in stale]
        self.write(METRICS_TABLE, self.spark.createDataFrame(kept, METRICS_SCHEMA))
        if not kept:
            self.counts.pop(METRICS_TABLE, None)
        return True

    def record(self, status: str) -> None:
        """Write this run's row of the `runs` manifest; a `running` row names the driver process
        (`facts.driver`), so a later job can tell that it died (`fail_abandoned_runs`).

        When the row of a `failed` run cannot be written (the disk that failed the run is still
        full), the error is logged and not raised, so the error that failed the run is the one
        reported; the row stays `running` until `fail_abandoned_runs` marks it failed."""
        if status == "running":
            self.facts["driver"] = driver()
        try:
            self._write_record(status)
        except Exception as exc:
            if status != "failed":
                raise
            log.error("[%s] could not record the run as failed (%s); the next job in %s marks "
                      "it failed", self.run_id, first_line(exc), self.database)

    def _write_record(self, status: str) -> None:
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


def driver() -> dict[str, Any]:
    """This driver process: host name and process id."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_abandoned_runs(spark: SparkSession, config: Config) -> list[str]:
    """Mark `failed` every run recorded `running` whose driver process, on this host, no longer
    exists (killed, or it could not record its failure: a full disk); return their ids.

    The row keeps its config and counts; `facts.failure` says what happened. Runs of drivers on
    other hosts are left alone: this host cannot tell whether they are alive."""
    database = config.run.database
    if not table_exists(spark, database, TABLE):
        return []
    host = socket.gethostname()
    failed: list[str] = []
    for row in spark.table(qualified(database, TABLE)).where("status = 'running'").collect():
        facts = json.loads(row["facts_json"] or "{}")
        owner = facts.get("driver") or {}
        if owner.get("host") != host or not isinstance(owner.get("pid"), int) or process_alive(
                owner["pid"]):
            continue
        facts["failure"] = (f"abandoned: driver process {owner['pid']} on {host} ended without "
                            f"recording the run's end")
        record = {**row.asDict(), "status": "failed", "finished_at": datetime.now(UTC),
                  "facts_json": json.dumps(facts, sort_keys=True, default=str)}
        record.pop(RUN_ID_COLUMN, None)
        df = spark.createDataFrame([record], schema=MANIFEST_SCHEMA)
        write_run_table(df, database, TABLE, row[RUN_ID_COLUMN], config.run.table_format)
        log.warning("[%s] %s; recorded as failed", row[RUN_ID_COLUMN], facts["failure"])
        failed.append(row[RUN_ID_COLUMN])
    return failed


RUN_ID_COLUMN = "run_id"


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


VIEW_COMMENT = "querylens latest v2: rows of the newest completed run that wrote {table}"


def latest_view_sql(database: str, table: str) -> str:
    """`CREATE OR REPLACE VIEW <table>_latest`: the rows of `table` whose run is the newest
    completed run (by `finished_at`, then run id) whose `runs.counts_json` lists `table`.

    The view is defined over `runs`, not pinned to a run id, so the one `runs` row update that
    records a run `completed` (or `failed`) moves every view at once."""
    runs = qualified(database, TABLE)
    return (
        f"CREATE OR REPLACE VIEW {qualified(database, table + LATEST_SUFFIX)} "
        f"COMMENT '{VIEW_COMMENT.format(table=table)}' AS "
        f"SELECT * FROM {qualified(database, table)} WHERE run_id = ("
        f"SELECT max_by(run_id, struct(finished_at, run_id)) FROM {runs} "
        f"WHERE status = 'completed' "
        f"AND get_json_object(counts_json, '$.{table}') IS NOT NULL)"
    )


def publish_latest_views(spark: SparkSession, database: str) -> dict[str, str]:
    """Make sure `<table>_latest` exists for every table a completed run wrote; return the map
    table -> the run its view shows now.

    The views are defined over `runs` (`latest_view_sql`), so they move when a run's row is
    recorded, all at once; this only creates the views of tables that have none yet (or an
    older, run-pinned definition) and drops the views of tables no completed run wrote, so a
    reader of `*_latest` never sees a run that is running, failed or was killed.
    """
    targets: dict[str, str] = {}
    for run_id, counts in completed_runs(spark, database):
        for table in counts:
            targets.setdefault(table, run_id)
    listed = {t.name: t for t in spark.catalog.listTables(database)}
    for table in sorted(targets):
        view = listed.get(table + LATEST_SUFFIX)
        current = view is not None and view.tableType == "VIEW" and (
            view.description == VIEW_COMMENT.format(table=table))
        if table in listed and not current:
            spark.sql(latest_view_sql(database, table))
    for name, view in listed.items():
        base = name.removesuffix(LATEST_SUFFIX)
        if view.tableType == "VIEW" and name.endswith(LATEST_SUFFIX) and base not in targets:
            spark.sql(f"DROP VIEW IF EXISTS {qualified(database, name)}")
    return targets
