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
         "cluster.n_components=5", "cluster.sweep=false", "cluster.stability_seeds=[]"]


@pytest.fixture(scope="module")
def demo_config(spark: SparkSession, spark_root: Path, config: Config) -> Config:
    demo = make_config(spark_root, f"input.path={spark_root / 'demo_events'}",
                       f"run.database={config.run.database}",
                       f"run.output_dir={config.run.output_dir}", *SMALL)
    write_demo_logs(spark, demo)
    return demo


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
