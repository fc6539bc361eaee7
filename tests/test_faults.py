"""Injected task failures: with task retries the run's tables equal a fault-free run's.

The pipeline runs twice in one `local[2,3]` Spark application (up to 3 attempts per task), in a
subprocess because a process holds one SparkContext: fault-free into database `clean`, then with
`run.fail_first_attempt=[embed, score]` into database `faulty`, each embedding from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

ROOT = Path(__file__).parents[1]
STAGES = ["ingest", "embed", "cluster", "success"]
SMALL = ["generate.n_events=3000", "generate.n_queries=400", "cluster.n_clusters=4",
         "cluster.n_components=5", "cluster.sweep=false", "cluster.stability_seeds=[]",
         "success.max_epochs=30", "success.min_per_class=5", "spark.master=local[2,3]"]
VOLATILE_METRIC = re.compile(r"second|time|per_s|throughput|rows_per", re.I)


def canonical(value: Any) -> Any:
    """A JSON-able, order-independent form of a cell (floats by repr, so bits must match)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in sorted(value.items())}
    if hasattr(value, "asDict"):
        return canonical(value.asDict())
    return value if isinstance(value, (int, str, bool, type(None))) else str(value)


def table_checksums(spark: SparkSession, database: str, run_id: str,
                    tables: list[str]) -> dict[str, dict[str, Any]]:
    """Row count and SHA-256 of the sorted rows of each table's `run_id` partition."""
    out = {}
    for table in sorted(tables):
        df = spark.table(f"{database}.{table}").where(f"run_id = '{run_id}'").drop("run_id")
        rows = [canonical(r.asDict()) for r in df.collect()]
        if table == "model_metrics":
            rows = [r for r in rows if not VOLATILE_METRIC.search(r["metric"])]
        lines = sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows)
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        out[table] = {"rows": len(lines), "sha256": digest}
    return out


def failed_task_attempts(spark: SparkSession) -> int:
    """Failed task attempts Spark's status tracker saw in this application."""
    tracker = spark.sparkContext.statusTracker()
    stages = {s for j in tracker.getJobIdsForGroup() for s in
              (tracker.getJobInfo(j).stageIds if tracker.getJobInfo(j) else [])}
    infos = [tracker.getStageInfo(s) for s in stages]
    return sum(i.numFailedTasks for i in infos if i is not None)


def main(root: Path) -> None:
    """Generate demo logs, run the pipeline clean then faulty, print checksums as JSON."""
    from querylens.app.pipeline import run_pipeline
    from querylens.demo.ground_truth import write_demo_logs
    from querylens.runtime.runs import Run
    from querylens.runtime.session import build_session
    from tests.helpers import make_config

    def config(database: str, *extra: str) -> Any:
        return make_config(root, f"input.path={root / 'events'}", f"run.database={database}",
                           f"run.output_dir={root / database}", *SMALL, *extra)

    clean = config("clean")
    faulty = config("faulty", "run.fail_first_attempt=[embed, score]")
    spark = build_session(clean)
    spark.sql("CREATE DATABASE IF NOT EXISTS faulty")
    write_demo_logs(spark, clean)
    spark.table("clean.demo_ground_truth").write.saveAsTable("faulty.demo_ground_truth")
    result: dict[str, Any] = {}
    for name, cfg in [("clean", clean), ("faulty", faulty)]:
        before = failed_task_attempts(spark)
        run = Run(spark, cfg, run_id="r1")
        run_pipeline(run, STAGES)
        status = spark.sql(f"SELECT status FROM {name}.runs WHERE run_id = 'r1'").first()
        result[name] = {
            "status": status[0] if status else None,
            "failed_task_attempts": failed_task_attempts(spark) - before,
            "embedded": run.facts["embed"]["embedded"],
            "tables": table_checksums(spark, name, "r1", list(run.counts)),
        }
    print("RESULT " + json.dumps(result))
    spark.stop()


def test_injected_task_failures_leave_identical_tables(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QUERYLENS_FAULT_LOG": str(tmp_path / "faults"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lib"),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "tests.test_faults", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    clean, faulty = result["clean"], result["faulty"]
    injected = sorted(p.name for p in (tmp_path / "faults").iterdir())
    assert {name.split("-")[0] for name in injected} == {"embed", "score"}, injected
    assert clean["failed_task_attempts"] == 0
    assert faulty["failed_task_attempts"] == len(injected)
    assert clean["status"] == faulty["status"] == "completed"
    assert clean["embedded"] == faulty["embedded"] > 300
    assert set(clean["tables"]) >= {"queries", "cluster_assignments", "clusters",
                                    "success_labels", "success_predictions"}
    assert faulty["tables"] == clean["tables"]
    (tmp_path.parent / "faults_result.json").write_text(json.dumps(
        {"injected": injected, **result}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
