"""A fault hook for testing Spark's task retries: fail the first attempt of some tasks.

`run.fail_first_attempt: [embed, score]` (or the `QUERYLENS_FAIL_FIRST_ATTEMPT=embed,score`
environment variable of the executors) makes the first attempt of every even-numbered partition
of those UDFs raise `InjectedFault`. With `spark.task.maxFailures` > 1 (e.g. master
`local[2,3]`) Spark reruns the task and the run completes; with 1 the run fails. When
`QUERYLENS_FAULT_LOG` names a folder, each injected fault leaves a marker file there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pyspark import TaskContext
from pyspark.sql import SparkSession

from querylens.runtime.errors import ConfigError
from querylens.runtime.session import is_connect

log = logging.getLogger(__name__)

PROPERTY = "querylens.fail_first_attempt"
ENV = "QUERYLENS_FAIL_FIRST_ATTEMPT"
LOG_ENV = "QUERYLENS_FAULT_LOG"
POINTS = ("embed", "score")


class InjectedFault(RuntimeError):
    """A failure injected on purpose by `maybe_fail`."""


def arm(spark: SparkSession, points: list[str]) -> None:
    """Make tasks started from this driver thread fail at `points` (empty: disarm). Spark
    Connect has no task-local properties: there only the executors' environment variable
    arms faults, and asking for points says so."""
    unknown = sorted(set(points) - set(POINTS))
    if unknown:
        raise ConfigError(f"unknown fault point {unknown[0]!r}; choose from {', '.join(POINTS)}")
    if is_connect(spark):
        if points:
            log.warning("run.fail_first_attempt is not available over Spark Connect: set %s in "
                        "the server's environment instead", ENV)
        return
    value = ",".join(points) if points else None
    spark.sparkContext.setLocalProperty(PROPERTY, value)  # type: ignore[arg-type]


def armed_points(context: TaskContext) -> set[str]:
    """Fault points armed for this task by local property or environment variable."""
    raw = context.getLocalProperty(PROPERTY) or os.environ.get(ENV, "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def maybe_fail(point: str) -> None:
    """Raise `InjectedFault` in the first attempt of an even partition when `point` is armed."""
    context = TaskContext.get()
    if context is None or context.attemptNumber() != 0 or context.partitionId() % 2:
        return
    if point not in armed_points(context):
        return
    where = (f"{point} stage {context.stageId()} partition {context.partitionId()} "
             f"attempt {context.attemptNumber()}")
    folder = os.environ.get(LOG_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        marker = f"{point}-s{context.stageId()}-p{context.partitionId()}-t{context.taskAttemptId()}"
        (Path(folder) / marker).touch()
    raise InjectedFault(f"injected fault: {where}")
