"""Same seed and inputs -> identical outputs; a killed run is invisible and resumes from the cache.

Run A goes straight through in database `det_a`. Run `b` in `det_b` is first killed inside the
cluster stage (after ingest and embedding wrote their rows), then rerun with the same run id: it
embeds nothing new and writes the same assignments, labels and recommendations as A. Each
database has its own embedding cache and model folder, so nothing is shared between A and b.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from querylens.app import pipeline
from querylens.app.pipeline import run_pipeline
from querylens.demo.ground_truth import write_demo_logs
from querylens.runtime.config import Config
from querylens.runtime.runs import Run, completed_run_ids, latest_completed_run
from tests.helpers import make_config
from tests.test_faults import table_checksums

STAGES = ["ingest", "embed", "cluster", "success", "recommend"]
SMALL = ["generate.n_events=3000", "generate.n_queries=400", "cluster.n_clusters=4",
         "cluster.n_components=5", "cluster.sweep=false", "cluster.stability_seeds=[]",
         "success.max_epochs=30", "success.min_per_class=5"]
COMPARED = {
    "cluster_assignments": ["query_key", "cluster_id", "next_cluster_id"],
    "success_labels": ["query_key", "success", "split", "cluster_id"],
    "recommendations": ["query_key", "rank", "rec_query_key", "rec_cluster_id"],
}


class Killed(RuntimeError):
    """Stands in for the driver dying mid-stage."""


def db_config(root: Path, database: str) -> Config:
    return make_config(root, f"input.path={root / 'events'}", f"run.database={database}",
                       f"run.output_dir={root / database}", *SMALL)


@pytest.fixture(scope="module")
def runs(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("determinism")
    a, b = db_config(root, "det_a"), db_config(root, "det_b")
    for db in ("det_a", "det_b"):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    write_demo_logs(spark, a)
    run_a = Run(spark, a, run_id="a")
    run_pipeline(run_a, STAGES)

    run_pipeline(Run(spark, b, run_id="b0"), ["ingest"])
    def killed_midway(run: Run) -> None:
        run.write("cluster_assignments", run.spark.table("det_a.cluster_assignments").limit(7))
        raise Killed("driver lost during clustering")

    killing = pipeline.STAGES.with_stage(
        dataclasses.replace(pipeline.STAGES["cluster"], run=killed_midway))
    with pytest.raises(Killed):
        run_pipeline(Run(spark, b, run_id="b"), STAGES, killing)
    after_kill = {
        "completed": completed_run_ids(spark, "det_b"),
        "status": dict(spark.sql("SELECT run_id, status FROM det_b.runs").collect()),
        "queries_view_runs": sorted(r[0] for r in spark.sql(
            "SELECT DISTINCT run_id FROM det_b.queries_latest").collect()),
        "assignment_view": spark.catalog.tableExists("det_b.cluster_assignments_latest"),
    }
    resumed = Run(spark, b, run_id="b")
    run_pipeline(resumed, STAGES)
    return {"a": run_a, "b": resumed, "after_kill": after_kill}


def frame(spark: SparkSession, database: str, table: str, run_id: str) -> pd.DataFrame:
    rows = spark.table(f"{database}.{table}").where(f"run_id = '{run_id}'").toPandas()
    return rows.drop(columns="run_id").sort_values(COMPARED[table]).reset_index(drop=True)


@pytest.mark.parametrize("table", list(COMPARED))
def test_same_seed_same_outputs(spark: SparkSession, runs: dict[str, object], table: str) -> None:
    a, b = frame(spark, "det_a", table, "a"), frame(spark, "det_b", table, "b")
    assert len(a) > 0
    pd.testing.assert_frame_equal(a[COMPARED[table]], b[COMPARED[table]])
    floats = [c for c in a.columns if a[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(a[floats], b[floats], check_exact=False, rtol=1e-6, atol=1e-6)


def test_same_seed_identical_checksums(spark: SparkSession, runs: dict[str, object]) -> None:
    run_a, run_b = runs["a"], runs["b"]
    assert isinstance(run_a, Run) and isinstance(run_b, Run)
    tables = sorted(set(run_a.counts) - {"model_metrics"})
    assert table_checksums(spark, "det_a", "a", tables) == table_checksums(
        spark, "det_b", "b", tables)


def test_killed_run_is_invisible_to_readers(runs: dict[str, object]) -> None:
    after = runs["after_kill"]
    assert isinstance(after, dict)
    assert after["status"] == {"b0": "completed", "b": "failed"}
    assert after["completed"] == ["b0"]
    assert after["queries_view_runs"] == ["b0"]
    assert after["assignment_view"] is False


def test_resume_embeds_nothing_new(spark: SparkSession, runs: dict[str, object]) -> None:
    run_a, run_b = runs["a"], runs["b"]
    assert isinstance(run_a, Run) and isinstance(run_b, Run)
    assert run_b.facts["embed"]["embedded"] == 0
    assert run_b.facts["embed"]["reused"] == run_a.facts["embed"]["embedded"] > 300
    assert latest_completed_run(spark, "det_b") == "b"
    for table in run_b.counts:
        viewed = spark.sql(f"SELECT DISTINCT run_id FROM det_b.{table}_latest").collect()
        assert [r[0] for r in viewed] == ["b"], table
    n = spark.sql("SELECT count(*) FROM det_b.cluster_assignments WHERE run_id = 'b'").first()[0]
    assert n == run_b.counts["cluster_assignments"] == run_b.counts["queries"]
