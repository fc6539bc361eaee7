"""Reliability defects of issue 17, each reproduced: a STATIC overwrite setting, stale rows after a
rerun, `_latest` views published one by one, incomplete cluster model folders, unsafe run ids."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from querylens.app.cli import main, parse
from querylens.app.pipeline import run_pipeline
from querylens.cluster.model import (
    ClusterModel,
    Projection,
    load_model,
    save_model,
    versions,
)
from querylens.report import report_dir
from querylens.runtime.config import Config
from querylens.runtime.errors import ConfigError, ModelLoadError
from querylens.runtime.runs import Run, latest_view_sql
from querylens.runtime.stages import Stage, StageRegistry
from querylens.runtime.tables import write_run_table
from tests.helpers import with_spec_columns

OVERWRITE_MODE = "spark.sql.sources.partitionOverwriteMode"


def run_ids(spark: SparkSession, name: str) -> dict[str, int]:
    return {r.run_id: r["count"] for r in spark.table(name).groupBy("run_id").count().collect()}


def queries(spark: SparkSession, n: int = 3):  # type: ignore[no-untyped-def]
    rows = [(f"k{i}", f"query {i}", i + 1) for i in range(n)]
    return with_spec_columns(
        spark.createDataFrame(rows, "query_key string, query string, n_searches long"), "queries")


@pytest.fixture
def static_overwrite(spark: SparkSession) -> Iterator[None]:
    before = spark.conf.get(OVERWRITE_MODE)
    spark.conf.set(OVERWRITE_MODE, "STATIC")
    yield
    spark.conf.set(OVERWRITE_MODE, before)


# 1. a STATIC partitionOverwriteMode in the session -----------------------------------------

def test_a_static_overwrite_setting_replaces_only_the_runs_partition(
    spark: SparkSession, config: Config, static_overwrite: None
) -> None:
    db = config.run.database
    for run_id in ("static-a", "static-b"):
        write_run_table(queries(spark), db, "queries", run_id)
        Run(spark, config, run_id).record("completed")
    write_run_table(queries(spark, 2), db, "queries", "static-a")
    Run(spark, config, "static-a").record("failed")
    found = run_ids(spark, f"{db}.queries")
    assert found["static-a"] == 2 and found["static-b"] == 3
    statuses = {r.run_id: r.status for r in spark.table(f"{db}.runs").collect()}
    assert statuses["static-a"] == "failed" and statuses["static-b"] == "completed"


# 2. a rerun replaces all of the run's rows of a stage's tables ---------------------------------

def rerun_registry(recommend: bool, skip_success: bool) -> StageRegistry:
    def make(run: Run) -> None:
        run.write("queries", queries(run.spark))
        if recommend:
            recs = run.spark.createDataFrame([("k0", 1, "k1")],
                                             "query_key string, rank int, rec_query_key string")
            run.write("recommendations", with_spec_columns(recs, "recommendations"))
            run.write_metrics([("recommendations", "all", "failing_queries", 1.0)])
        run.write_metrics([("make", "all", "rows", 3.0)])

    def success(run: Run) -> None:
        labels = run.spark.createDataFrame([("k0", True)], "query_key string, success boolean")
        run.write("success_labels", with_spec_columns(labels, "success_labels"))
        run.write_metrics([("success_mlp", "test", "auc", 0.9)])

    return StageRegistry([
        Stage("make", make, writes=("queries", "recommendations", "model_metrics")),
        Stage("success", success, reads=("queries",),
              writes=("success_labels", "model_metrics"),
              skip=(lambda _run: "off for this test") if skip_success else None),
    ])


def test_a_rerun_replaces_the_rows_of_tables_it_writes_empty_or_skips(
    spark: SparkSession, config: Config
) -> None:
    db = config.run.database
    run_pipeline(Run.open(spark, config, "rerun"), None, rerun_registry(True, False))
    assert run_ids(spark, f"{db}.recommendations").get("rerun") == 1
    assert run_ids(spark, f"{db}.success_labels").get("rerun") == 1

    rerun = Run.open(spark, config, "rerun")
    run_pipeline(rerun, None, rerun_registry(False, True))
    assert "rerun" not in run_ids(spark, f"{db}.recommendations")
    assert "rerun" not in run_ids(spark, f"{db}.success_labels")
    assert run_ids(spark, f"{db}.queries")["rerun"] == 3
    metrics = {r.model for r in spark.table(f"{db}.model_metrics")
               .where(F.col("run_id") == "rerun").collect()}
    assert metrics == {"make"}
    counts = json.loads(spark.table(f"{db}.runs").where(F.col("run_id") == "rerun")
                        .first().counts_json)
    assert set(counts) == {"queries", "model_metrics"}


# 3. `_latest` views move with the one `runs` row ---------------------------------------------

def toy(run: Run) -> None:
    run.write("queries", queries(run.spark))
    clusters = run.spark.createDataFrame([(0, 3)], "cluster_id int, size long")
    run.write("clusters", with_spec_columns(clusters, "clusters"))


def test_latest_views_are_decided_by_the_runs_table_alone(
    spark: SparkSession, config: Config
) -> None:
    db = config.run.database
    registry = StageRegistry([Stage("toy", toy, writes=("queries", "clusters"))])
    for run_id in ("view-a", "view-b"):
        run_pipeline(Run.open(spark, config, run_id), None, registry)

    def latest() -> dict[str, set[str]]:
        return {t: {r.run_id for r in spark.table(f"{db}.{t}_latest").select("run_id")
                    .distinct().collect()} for t in ("queries", "clusters")}

    assert latest() == {"queries": {"view-b"}, "clusters": {"view-b"}}
    # one `runs` row update, with no view statement after it, moves every view at once
    Run.open(spark, config, "view-b").record("running")
    assert latest() == {"queries": {"view-a"}, "clusters": {"view-a"}}
    Run.open(spark, config, "view-b").record("completed")
    assert latest() == {"queries": {"view-b"}, "clusters": {"view-b"}}
    text = latest_view_sql(db, "clusters")
    assert "view-" not in text and f"{db}.runs" in text


def test_publishing_again_issues_no_view_statement(
    spark: SparkSession, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from querylens.runtime import runs

    registry = StageRegistry([Stage("toy", toy, writes=("queries", "clusters"))])
    run_pipeline(Run.open(spark, config, "view-c"), None, registry)
    statements: list[str] = []
    real = spark.sql
    monkeypatch.setattr(spark, "sql", lambda q, *a, **k: statements.append(q) or real(q, *a, **k))
    assert runs.publish_latest_views(spark, config.run.database)["clusters"] == "view-c"
    assert [s for s in statements if "VIEW" in s] == []


# 4. cluster model folders ---------------------------------------------------------------------

def small_model() -> ClusterModel:
    rng = np.random.default_rng(0)
    projection = Projection(np.zeros(4), np.eye(4), np.full(4, 0.25))
    return ClusterModel(projection, rng.normal(size=(3, 2)))


def test_an_incomplete_model_folder_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_model(small_model(), tmp_path, {"run_id": "one"})
    broken = tmp_path / "v2"
    broken.mkdir()
    (broken / "model.npz").write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="querylens"):
        assert versions(tmp_path) == [1]
    assert "v2 is incomplete" in caplog.text
    assert load_model(tmp_path).version == 1
    with pytest.raises(ModelLoadError, match="version 2 .* is incomplete"):
        load_model(tmp_path, 2)
    third = save_model(small_model(), tmp_path, {"run_id": "three"})
    assert third.version == 3 and versions(tmp_path) == [1, 3]
    assert load_model(tmp_path).meta["run_id"] == "three"


def test_a_save_that_fails_half_way_leaves_no_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_model(small_model(), tmp_path, {"run_id": "x"})
    assert versions(tmp_path) == [] and list(tmp_path.iterdir()) == []


# 7. run ids -----------------------------------------------------------------------------------

@pytest.mark.parametrize("run_id", ["../../x", "a/b", ".hidden", "x'; DROP TABLE runs; --", ""])
def test_run_ids_are_checked_before_any_use(run_id: str, config: Config) -> None:
    with pytest.raises(ConfigError, match="run id must be"):
        parse("report", ["--run-id", run_id])
    with pytest.raises(ConfigError, match="run id must be"):
        report_dir(config, run_id)


def test_report_of_a_run_that_does_not_exist_is_refused(
    spark: SparkSession, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(config.run.output_dir)
    before = sorted(out.rglob("*")) if out.exists() else []
    code = main(["report", "--run-id", "ghost", "--set", f"run.database={config.run.database}",
                 "--set", f"run.output_dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"querylens report: error: run ghost does not exist in "
                   f"{config.run.database}.runs: nothing to report (run the pipeline first)"]
    assert (sorted(out.rglob("*")) if out.exists() else []) == before
    assert main(["report", "--run-id", "../../x"]) == 2
    assert "run id must be" in capsys.readouterr().err
