"""The whole pipeline over a real Spark Connect server on loopback equals the classic run.

PySpark refuses a Connect session in a process that holds a classic one, so the Connect side
runs as the real job processes (`jobs/generate_logs.py`, `jobs/pipeline.py`) and its tables
are read back from the server's warehouse files."""

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from querylens.deploy.connect_server import local_connect_server
from querylens.runtime.config import load_config
from querylens.runtime.runs import Run
from querylens.runtime.specs import SPECS
from tests.conftest import DEMO
from tests.helpers import config_overrides
from tests.test_faults import VOLATILE_METRIC

pytestmark = pytest.mark.slow

RTOL = 1e-4
ATOL = 1e-5
RUN_FACTS = {"runs"}
VOLATILE = {"run_id", "embedded_at", "embedded_run_id", "embed_batch_id", "first_seen",
            "last_seen", "model_version"}


ROOT = Path(__file__).parents[1]


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """The table's rows without per-run columns, sorted by every column that is not a float."""
    frame = frame[sorted(c for c in frame.columns if c not in VOLATILE)]
    keys = [c for c in frame.columns if frame[c].dtype != float]
    order = frame[keys].astype(str).agg("|".join, axis=1) if keys else frame.index.to_series()
    return frame.assign(_order=order).sort_values("_order").drop(columns="_order").reset_index(
        drop=True)


def measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Without timing metrics (`model_metrics` rows such as seconds or rows per second)."""
    if "metric" not in frame.columns:
        return frame
    return frame[~frame["metric"].astype(str).str.contains(VOLATILE_METRIC)]


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
            return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    if hasattr(a, "__len__") and not isinstance(a, str | bytes):
        return b is not None and len(a) == len(b) and all(map(same_value, a, b))
    return bool(a == b) or (pd.isna(a) and pd.isna(b))


def differences(left: pd.DataFrame, right: pd.DataFrame) -> list[str]:
    """Cells that differ between two sorted frames of the same table (at most five)."""
    if list(left.columns) != list(right.columns) or len(left) != len(right):
        return [f"shape {left.shape} {list(left.columns)} vs {right.shape} {list(right.columns)}"]
    found = []
    for column in left.columns:
        for i, (a, b) in enumerate(zip(left[column], right[column], strict=True)):
            if not same_value(a, b):
                keys = {c: left[c][i] for c in left.columns if left[c].dtype != float}
                found.append(f"{column} at {keys}: {a!r} vs {b!r}")
                break
    return found[:5]


def run_job(job: str, sets: list[str], *args: str) -> None:
    command = [sys.executable, str(ROOT / "jobs" / f"{job}.py"), *args]
    for value in sets:
        command += ["--set", value]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, f"{job} over Spark Connect failed:\n{done.stderr[-3000:]}"


def test_pipeline_over_spark_connect_equals_the_classic_run(
    spark: SparkSession, demo_run: Run, spark_root: Path
) -> None:
    root = spark_root / "connect"
    database = demo_run.database
    sets = config_overrides(root, f"run.database={database}", f"input.path={root / 'demo'}",
                            *DEMO)
    with local_connect_server(load_config(None, sets), root / "logs") as url:
        remote = [*sets, f"spark.remote={url}"]
        run_job("generate_logs", remote)
        run_job("pipeline", remote, "--run-id", "demo")
    warehouse = root / "warehouse" / f"{database}.db"
    runs = spark.read.parquet(str(warehouse / "runs")).where("run_id = 'demo'").collect()
    assert [row.status for row in runs] == ["completed"]
    compared = []
    for spec in SPECS:
        if spec.name in RUN_FACTS:
            continue
        classic = comparable(measured(spark.table(f"{database}.{spec.name}").toPandas()))
        assert len(classic), f"classic run wrote no {spec.name}"
        over_connect = comparable(measured(
            spark.read.parquet(str(warehouse / spec.name)).toPandas()))
        diff = differences(classic, over_connect)
        assert not diff, f"{spec.name}: {diff}"
        compared.append(spec.name)
    assert len(compared) == len(SPECS) - len(RUN_FACTS)
