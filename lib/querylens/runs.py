"""A run: its id, timings, counts and the `runs` manifest table."""

from __future__ import annotations

import json
import logging
import math
import platform
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession

from querylens.config import Config, to_dict
from querylens.tables import read_run_table, table_exists, write_run_table

log = logging.getLogger("querylens")

TABLE = "runs"


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
    """State of one pipeline run, recorded in the manifest when it ends."""

    spark: SparkSession
    config: Config
    run_id: str = field(default_factory=new_run_id)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

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

    def write(self, table: str, df: Any) -> int:
        """Write this run's rows of `table` and record the count."""
        rows = write_run_table(df, self.database, table, self.run_id, self.config.run.table_format)
        self.counts[table] = rows
        log.info("[%s] wrote %s rows to %s.%s", self.run_id, rows, self.database, table)
        return rows

    def add_metrics(self, rows: list[tuple[str, str, str, float]]) -> int:
        """Merge (model, split, metric, value) rows into this run's `model_metrics` and rewrite it.

        Rows already written for this run (by any stage or job) are kept unless the same
        (model, split, metric) is given again; a non-finite value is refused.
        """
        merged: dict[tuple[str, str, str], float] = {}
        if table_exists(self.spark, self.database, METRICS_TABLE):
            existing = read_run_table(self.spark, self.database, METRICS_TABLE, self.run_id)
            for r in existing.collect():
                merged[(r["model"], r["split"], r["metric"])] = r["value"]
        for model, split, metric, value in rows:
            if value is None or not math.isfinite(value):
                raise ValueError(f"metric {model}/{split}/{metric} is {value}; leave it out")
            merged[(model, split, metric)] = float(value)
        records = [(*key, value) for key, value in sorted(merged.items())]
        return self.write(METRICS_TABLE, self.spark.createDataFrame(records, METRICS_SCHEMA))

    def record(self, status: str) -> None:
        """Write this run's row of the `runs` manifest."""
        row = {
            "status": status,
            "started_at": self.started_at,
            "finished_at": datetime.now(UTC),
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
