"""Durable runs and the stage registry: stages run one by one, in this process or in separate
processes, add up to one `runs` row, and a stage without its inputs stops before Spark work.

The jobs run as scripts (as spark-submit runs them), each in its own process, and a new session
reads their tables."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from querylens.app.cli import main, run_job
from querylens.app.pipeline import STAGES, run_pipeline
from querylens.demo.generator import generate_catalogue, generate_events
from querylens.runtime.config import Config
from querylens.runtime.errors import StageInputError
from querylens.runtime.runs import Run, completed_run_ids
from querylens.runtime.stages import Stage, StageRegistry
from tests.helpers import with_spec_columns

ROOT = Path(__file__).parents[1]
PIPELINE = ["ingest", "embed", "cluster", "success", "recommend", "report"]
N_EVENTS = 3000


def toy_registry(fail: bool = False) -> StageRegistry:
    """Two stages over a tiny `queries` table; `count` fails when `fail`."""

    def make(run: Run) -> None:
        rows = [(f"k{i}", f"query {i}", i + 1) for i in range(5)]
        queries = run.spark.createDataFrame(rows, "query_key string, query string, n_searches long")
        run.write("queries", with_spec_columns(queries, "queries"))
        run.facts["make"] = {"made": 5}

    def count(run: Run) -> None:
        if fail:
            raise RuntimeError("count failed on purpose")
        run.facts["count"] = {"searches": run.read("queries").agg(F.sum("n_searches")).first()[0]}

    return StageRegistry([Stage("make", make, writes=("queries",)),
                          Stage("count", count, reads=("queries",))])


def runs_row(spark: SparkSession, config: Config, run_id: str) -> dict:
    row = spark.table(f"{config.run.database}.runs").where(F.col("run_id") == run_id).collect()
    assert len(row) == 1
    return {"status": row[0].status, "timings": json.loads(row[0].timings_json),
            "facts": json.loads(row[0].facts_json), "counts": json.loads(row[0].counts_json)}


def latest_run(spark: SparkSession, config: Config, table: str) -> set[str]:
    view = f"{config.run.database}.{table}_latest"
    return {r.run_id for r in spark.table(view).select("run_id").distinct().collect()}


def test_stages_in_separate_invocations_merge_into_one_runs_row(
    spark: SparkSession, config: Config
) -> None:
    registry = toy_registry()
    run_pipeline(Run.open(spark, config, "merge"), ["make"], registry)
    second = Run.open(spark, config, "merge")
    assert second.facts["make"] == {"made": 5} and "make" in second.timings
    run_pipeline(second, ["count"], registry)
    row = runs_row(spark, config, "merge")
    assert row["status"] == "completed"
    assert set(row["timings"]) == {"make", "count"}
    assert row["facts"]["make"] == {"made": 5} and row["facts"]["count"] == {"searches": 15}
    assert row["counts"] == {"queries": 5}
    assert latest_run(spark, config, "queries") == {"merge"}


def test_a_failed_stage_rerun_leaves_the_views_on_a_completed_run(
    spark: SparkSession, config: Config
) -> None:
    run_pipeline(Run.open(spark, config, "older"), ["make", "count"], toy_registry())
    run_pipeline(Run.open(spark, config, "newer"), ["make", "count"], toy_registry())
    assert latest_run(spark, config, "queries") == {"newer"}
    with pytest.raises(RuntimeError, match="count failed on purpose"):
        run_pipeline(Run.open(spark, config, "newer"), ["count"], toy_registry(fail=True))
    assert runs_row(spark, config, "newer")["status"] == "failed"
    completed = completed_run_ids(spark, config.run.database)
    assert "newer" not in completed
    assert latest_run(spark, config, "queries") == {completed[0]} != {"newer"}


def test_a_stage_without_its_inputs_fails_before_spark_work(
    spark: SparkSession, config: Config
) -> None:
    run = Run.open(spark, config, "no-ingest")
    with pytest.raises(StageInputError) as caught:
        run_pipeline(run, ["cluster"])
    message = str(caught.value)
    assert "\n" not in message
    assert f"stage cluster needs table {config.run.database}.queries" in message
    assert "run the ingest stage first" in message
    assert run.recorded() is None and run.timings == {}


def test_the_cli_names_the_missing_table_on_one_line(
    spark: SparkSession, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["success", "--run-id", "nothing-yet", "--set",
                 f"run.database={config.run.database}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"querylens success: error: stage success needs table "
                   f"{config.run.database}.queries for run nothing-yet, which has none: run the "
                   f"ingest stage first (querylens ingest --run-id nothing-yet)"]


def test_the_cli_keeps_the_traceback_of_an_unexpected_error() -> None:
    with pytest.raises(ZeroDivisionError):
        run_job("boom", lambda _config, _args: 1 / 0, [])


def test_the_registry_declares_what_every_stage_reads_and_writes() -> None:
    assert list(STAGES.pipeline) == PIPELINE
    assert STAGES.writers("queries") == ["ingest"]
    assert STAGES.writers("cluster_assignments") == ["cluster", "score"]
    for stage in STAGES:
        for table in stage.reads:
            assert STAGES.writers(table), f"{stage.name} reads {table}, which no stage writes"
    with pytest.raises(ValueError, match="registered twice"):
        StageRegistry([STAGES["ingest"], STAGES["ingest"]])


READER = """
import json, sys
from querylens.runtime.config import load_config
from querylens.runtime.session import build_session
spark = build_session(load_config(None, sys.argv[1:]))
runs = {r.run_id: {"status": r.status, "timings": json.loads(r.timings_json),
                   "facts": json.loads(r.facts_json)}
        for r in spark.table("querylens.runs").collect()}
views = {t.name: sorted(r.run_id for r in spark.table("querylens." + t.name)
                        .select("run_id").distinct().collect())
         for t in spark.catalog.listTables("querylens") if t.name.endswith("_latest")}
versions = {r.run_id: r.v for r in spark.sql(
    "SELECT run_id, max(model_version) AS v FROM querylens.cluster_assignments "
    "GROUP BY run_id").collect()}
print(json.dumps({"runs": runs, "views": views, "versions": versions}))
"""


@pytest.mark.slow
def test_the_readme_stage_by_stage_workflow_in_separate_processes(
    spark: SparkSession, tmp_path: Path
) -> None:
    catalogue = generate_catalogue(spark, 300, 12)
    generate_events(spark, catalogue, N_EVENTS, 12, "2026-10-05", 3).write.parquet(
        str(tmp_path / "day2"))
    sets = [f"run.warehouse_dir={tmp_path / 'wh'}", f"run.metastore_dir={tmp_path / 'ms'}",
            f"run.output_dir={tmp_path / 'out'}", f"generate.n_events={N_EVENTS}",
            "generate.n_queries=300", f"input.path={tmp_path / 'day1'}", "cluster.n_clusters=4",
            "cluster.n_components=5", "cluster.sweep=false", "cluster.stability_seeds=[]",
            "success.max_epochs=5", "report.projection=pca", "spark.shuffle_partitions=2",
            "spark.conf={spark.ui.enabled: 'false'}"]

    def job(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [a for s in sets for a in ("--set", s)] + list(args)
        done = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{name}.py"), *argv],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, (name, done.stderr[-4000:])
        return done

    job("generate_logs")
    job("ingest", "--run-id", "stagewise")
    for name in PIPELINE[1:]:
        job(name, "--run-id", "stagewise")
    job("score", "--run-id", "scored-day2", "--set", f"input.path={tmp_path / 'day2'}")
    read = subprocess.run([sys.executable, "-c", textwrap.dedent(READER), *sets],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    state = json.loads(read.stdout.strip().splitlines()[-1])
    runs, views = state["runs"], state["views"]
    stagewise = runs["stagewise"]
    assert stagewise["status"] == "completed"
    assert set(stagewise["timings"]) == set(PIPELINE)
    assert stagewise["facts"]["ingest"]["events"] == N_EVENTS
    assert stagewise["facts"]["embed"]["embedded"] == stagewise["facts"]["ingest"]["queries"]
    assert "no demo_ground_truth" not in " ".join(stagewise["facts"]["recommend"]["notes"])
    assert set(stagewise["facts"]) >= {"ingest", "embed", "cluster", "success", "recommend",
                                       "report"}
    scored = runs["scored-day2"]
    assert scored["status"] == "completed"
    assert set(scored["timings"]) == {"ingest", "embed", "score"}
    assert scored["facts"]["ingest"]["events"] == N_EVENTS
    assert state["versions"]["scored-day2"] == stagewise["facts"]["cluster"]["model_version"]
    assert {"queries_latest", "clusters_latest", "recommendations_latest"} <= set(views)
    for view, run_ids in views.items():
        assert len(run_ids) == 1 and runs[run_ids[0]]["status"] == "completed", view
    assert views["recommendations_latest"] == ["stagewise"]
    assert views["cluster_assignments_latest"] == ["scored-day2"]
