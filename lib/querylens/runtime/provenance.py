"""Which processes ran a UDF's tasks: evidence that the work ran on executors, not the driver.

A stage opens `track_tasks(spark)`; a UDF built inside it captures `task_probe()` on the driver
and calls `note_task(probe)` in each task on the worker. The task records (task id, stage,
partition, host, Python pid and interpreter, querylens location, assigned GPUs) come back
through an accumulator; the driver maps each task id to the executor id and host that Spark's
scheduler recorded for it (`driver` in local mode). Over Spark Connect, which has neither
accumulators nor the scheduler's store, each task writes its record as a JSON file under
`querylens.shared_dir` and the driver reads them back (executor ids stay unknown).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyarrow.fs import FileSelector, FileSystem
from pyspark import TaskContext
from pyspark.accumulators import Accumulator, AccumulatorParam
from pyspark.sql import SparkSession

from querylens.runtime.session import SHARED_DIR_KEY, is_connect

if TYPE_CHECKING:
    from querylens.runtime.runs import Run

log = logging.getLogger("querylens")

MAX_TASK_RECORDS = 200

Probe = Accumulator[list[dict[str, Any]]] | str
_ACTIVE: list[Probe] = []


class RecordList(AccumulatorParam[list[dict[str, Any]]]):
    """Accumulates task records as a list."""

    def zero(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return []

    def addInPlace(
        self, value1: list[dict[str, Any]], value2: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        value1.extend(value2)
        return value1


@dataclass
class TaskTracker:
    """The task records of one tracked block, filled in when the block ends."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, driver: dict[str, Any]) -> dict[str, Any]:
        """Distinct executors, hosts and Python processes that ran the tracked tasks."""
        executors = sorted({str(r.get("executor_id")) for r in self.records})
        return {
            "n_tasks": len({r["task_id"] for r in self.records}),
            "executor_ids": executors,
            "hosts": sorted({r["host"] for r in self.records}),
            "pids": sorted({r["pid"] for r in self.records}),
            "pythons": sorted({r["python"] for r in self.records}),
            "querylens_paths": sorted({r["querylens"] for r in self.records}),
            "gpus": sorted({g for r in self.records for g in r["gpus"]}),
            "ran_on_driver": any(r.get("executor_id") == "driver"
                                 or (r["host"] == driver["host"] and r["pid"] == driver["pid"])
                                 for r in self.records),
            "tasks": sorted(self.records, key=lambda r: r["task_id"])[:MAX_TASK_RECORDS],
        }


def driver_info(spark: SparkSession) -> dict[str, Any]:
    """Host, pid, interpreter, master, deploy mode and application id of this driver (over
    Spark Connect: the server's URL as master)."""
    facts: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(),
                             "python": sys.executable}
    if is_connect(spark):
        return {**facts, "master": f"sc://{spark.client.host}",
                "deploy_mode": "connect", "app_id": None}
    sc = spark.sparkContext
    return {**facts, "master": sc.master,
            "deploy_mode": sc.getConf().get("spark.submit.deployMode", "client"),
            "app_id": sc.applicationId}


@contextmanager
def track_tasks(spark: SparkSession) -> Iterator[TaskTracker]:
    """Record the tasks of UDFs that call `note_task(task_probe())` inside this block."""
    tracker = TaskTracker()
    probe: Probe
    if is_connect(spark):
        probe = f"{spark.conf.get(SHARED_DIR_KEY)}/tasks/{uuid.uuid4().hex}"
    else:
        probe = spark.sparkContext.accumulator([], RecordList())
    _ACTIVE.append(probe)
    try:
        yield tracker
    finally:
        _ACTIVE.remove(probe)
        if isinstance(probe, str):
            tracker.records = read_task_files(probe)
        else:
            records = {r["task_id"]: r for r in probe.value}
            executors = task_executors(spark, {r["stage_id"] for r in records.values()})
            for task_id, record in records.items():
                record["executor_id"], record["executor_host"] = executors.get(
                    task_id, (None, None))
            tracker.records = list(records.values())


def read_task_files(folder: str) -> list[dict[str, Any]]:
    """The task records written under `folder` (one per task id, the last attempt's), then
    the folder removed."""
    filesystem, root = FileSystem.from_uri(folder)
    records: dict[int, dict[str, Any]] = {}
    infos = filesystem.get_file_info(FileSelector(root, allow_not_found=True))
    for info in sorted(infos, key=lambda i: i.path):
        with filesystem.open_input_stream(info.path) as stream:
            record = json.loads(stream.read())
        records[record["task_id"]] = {**record, "executor_id": None, "executor_host": None}
    if infos:
        filesystem.delete_dir(root)
    return list(records.values())


@contextmanager
def record_stage_tasks(run: Run, stage: str) -> Iterator[None]:
    """Track `stage`'s probed tasks into `run.facts["tasks"][stage]` (with the driver's facts)."""
    with track_tasks(run.spark) as tracker:
        yield
    if tracker.records:
        driver = run.facts.setdefault("driver", {})
        if "master" not in driver:
            driver.update(driver_info(run.spark))
        run.facts.setdefault("tasks", {})[stage] = tracker.summary(driver)


def task_probe() -> Probe | None:
    """The probe (accumulator, or folder over Spark Connect) of the innermost `track_tasks`
    block on this driver, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


def note_task(probe: Probe | None) -> None:
    """Inside a task: add this task's record to `probe` (no-op when None or outside a task)."""
    context = TaskContext.get()
    if probe is None or context is None:
        return
    import querylens

    record = {
        "task_id": context.taskAttemptId(),
        "stage_id": context.stageId(),
        "partition": context.partitionId(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": sys.executable,
        "querylens": os.path.dirname(querylens.__file__ or ""),
        "gpus": list(context.resources()["gpu"].addresses)
        if "gpu" in context.resources() else [],
    }
    if isinstance(probe, str):
        filesystem, root = FileSystem.from_uri(probe)
        filesystem.create_dir(root, recursive=True)
        with filesystem.open_output_stream(f"{root}/{record['task_id']}.json") as stream:
            stream.write(json.dumps(record).encode())
    else:
        probe.add([record])


def task_executors(spark: SparkSession, stage_ids: set[int]) -> dict[int, tuple[str, str]]:
    """Task id -> (executor id, host) for every task of `stage_ids`, from the scheduler's store."""
    sc = spark.sparkContext
    found: dict[int, tuple[str, str]] = {}
    try:
        store = sc._jsc.sc().statusStore()  # type: ignore[union-attr]
        for stage_id in stage_ids:
            info = sc.statusTracker().getStageInfo(stage_id)
            attempts = range((info.currentAttemptId if info else 0) + 1)
            for attempt in attempts:
                tasks = store.taskList(stage_id, attempt, 1_000_000)
                for i in range(tasks.size()):
                    task = tasks.apply(i)
                    found[task.taskId()] = (task.executorId(), task.host())
    except Exception as exc:
        log.warning("could not map task ids to executors: %s", exc)
    return found
