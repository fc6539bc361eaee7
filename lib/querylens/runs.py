"""A run: its id, timings, counts and the `runs` manifest table."""

from __future__ import annotations

import json
import logging
import platform
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession

from querylens.config import Config, to_dict
from querylens.tables import write_run_table

log = logging.getLogger("querylens")

TABLE = "runs"


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


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
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
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

    def record(self, status: str) -> None:
        """Write this run's row of the `runs` manifest."""
        row = {
            "status": status,
            "started_at": self.started_at,
            "finished_at": datetime.now(timezone.utc),
            "config_json": json.dumps(to_dict(self.config), sort_keys=True),
            "versions_json": json.dumps(versions(), sort_keys=True),
            "timings_json": json.dumps(self.timings, sort_keys=True),
            "counts_json": json.dumps(self.counts, sort_keys=True),
            "facts_json": json.dumps(self.facts, sort_keys=True, default=str),
        }
        df = self.spark.createDataFrame([row], schema=MANIFEST_SCHEMA)
        write_run_table(df, self.database, TABLE, self.run_id, self.config.run.table_format)


MANIFEST_SCHEMA = (
    "status string, started_at timestamp, finished_at timestamp, config_json string, "
    "versions_json string, timings_json string, counts_json string, facts_json string"
)
