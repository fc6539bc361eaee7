import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from querylens.app.pipeline import run_pipeline
from querylens.demo.ground_truth import write_demo_logs
from querylens.runtime.config import Config
from querylens.runtime.runs import Run
from querylens.runtime.tables import write_run_table
from tests.helpers import make_config

ROOT = Path(__file__).parents[1]
SMALL = ["generate.n_events=4000", "generate.n_queries=600", "cluster.n_clusters=6",
         "cluster.n_components=5"]


@pytest.fixture(scope="module")
def demo_config(spark: SparkSession, spark_root: Path, config: Config) -> Config:
    demo = make_config(spark_root, f"input.path={spark_root / 'demo_events'}",
                       f"run.database={config.run.database}",
                       f"run.output_dir={config.run.output_dir}", *SMALL)
    write_demo_logs(spark, demo)
    return demo


def test_pipeline_writes_every_table(spark: SparkSession, demo_run: Run) -> None:
    db, run_id = demo_run.database, demo_run.run_id
    manifest = spark.sql(f"SELECT * FROM {db}.runs WHERE run_id = '{run_id}'").collect()
    assert [r.status for r in manifest] == ["completed"]
    counts = json.loads(manifest[0].counts_json)
    facts = json.loads(manifest[0].facts_json)
    n_queries = spark.sql(f"SELECT count(*) FROM {db}.queries WHERE run_id = '{run_id}'").first()[0]
    assert counts["queries"] == n_queries == facts["ingest"]["queries"]
    assert facts["ingest"]["events"] == 6000
    assert facts["embed"]["embedded"] + facts["embed"]["reused"] == n_queries
    assigned = spark.sql(
        f"SELECT count(DISTINCT query_key), count(*), count(DISTINCT cluster_id) "
        f"FROM {db}.cluster_assignments WHERE run_id = '{run_id}'"
    ).first()
    assert tuple(assigned) == (n_queries, n_queries, 6)
    sizes = spark.sql(f"SELECT sum(size) FROM {db}.clusters WHERE run_id = '{run_id}'").first()[0]
    assert sizes == n_queries
    assert set(json.loads(manifest[0].timings_json)) == {
        "ingest", "embed", "cluster", "success", "recommend", "report"}
    assert Path(facts["report"]["path"]).is_file()


def test_rerun_replaces_the_run_and_reuses_embeddings(
    spark: SparkSession, demo_config: Config
) -> None:
    run = Run(spark, demo_config, run_id="rerun")
    run_pipeline(run, ["ingest", "embed", "cluster"])
    again = Run(spark, demo_config, run_id="rerun")
    run_pipeline(again, ["ingest", "embed", "cluster"])
    assert again.facts["embed"]["embedded"] == 0
    db = demo_config.run.database
    rows = spark.sql(f"SELECT count(*) FROM {db}.queries WHERE run_id = 'rerun'").first()[0]
    assert rows == again.facts["ingest"]["queries"]
    assert spark.sql(f"SELECT count(*) FROM {db}.runs WHERE run_id = 'rerun'").first()[0] == 1


@pytest.mark.slow
def test_jobs_write_tables_a_new_session_reads(tmp_path: Path) -> None:
    sets = [f"run.warehouse_dir={tmp_path / 'wh'}", f"run.metastore_dir={tmp_path / 'ms'}",
            f"input.path={tmp_path / 'events'}", *SMALL]
    args = [a for s in sets for a in ("--set", s)]
    for job in ("generate_logs", "pipeline"):
        done = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "largest clusters:" in done.stdout
    reader = textwrap.dedent(f"""
        from querylens.runtime.config import load_config
        from querylens.runtime.session import build_session
        spark = build_session(load_config(None, {sets!r}))
        row = spark.sql("SELECT count(*) AS n, count(DISTINCT run_id) AS runs "
                        "FROM querylens.cluster_assignments").first()
        status = spark.sql("SELECT status FROM querylens.runs").first().status
        print(row.n, row.runs, status)
    """)
    read = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    n, runs, status = read.stdout.split()
    assert int(n) > 100 and runs == "1" and status == "completed"


def test_a_write_may_add_columns_but_not_drop_them(spark: SparkSession) -> None:
    spark.sql("CREATE DATABASE IF NOT EXISTS ql_schema")
    write_run_table(spark.createDataFrame([(1, "a")], "x int, y string"), "ql_schema", "t", "r1")
    wider = spark.createDataFrame([(2, "b", ["p", "q"])], "x int, y string, z array<string>")
    assert write_run_table(wider, "ql_schema", "t", "r2") == 1
    rows = {r.run_id: r for r in spark.table("ql_schema.t").collect()}
    assert rows["r1"].z is None and rows["r2"].z == ["p", "q"]
    with pytest.raises(ValueError, match=r"table ql_schema.t has columns .* lacks \['y'\]"):
        write_run_table(spark.createDataFrame([(3, None)], "x int, z array<string>"),
                        "ql_schema", "t", "r3")
