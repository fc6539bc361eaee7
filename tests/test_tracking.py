"""MLflow tracking: a tracked pipeline invocation records its config, metrics, timings, both
models and the report, the manifest names the MLflow run, the logged success model scores as
`success_predictions` did; with tracking off mlflow is never imported."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from pyspark.sql import SparkSession

from querylens.app.pipeline import run_pipeline
from querylens.embed.stage import run_embeddings
from querylens.runtime.arrays import to_pandas
from querylens.runtime.config import TrackingConfig
from querylens.runtime.runs import Run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tracked(spark: SparkSession, demo_run: Run, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Run, str]:
    """The demo run's report stage run again with tracking on, into a fresh SQLite store."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    config = dataclasses.replace(demo_run.config, tracking=TrackingConfig(uri, "qtest"))
    run = Run.open(spark, config, demo_run.run_id)
    run_pipeline(run, ["report"])
    return run, uri


def test_tracked_run_records_config_metrics_models_and_report(tracked: tuple[Run, str]) -> None:
    run, uri = tracked
    facts = json.loads(run.recorded()["facts_json"])["mlflow"]
    assert "error" not in facts
    client = mlflow.MlflowClient(uri)
    recorded = client.get_run(facts["run_id"])
    assert recorded.info.status == "FINISHED"
    assert recorded.info.run_name == run.run_id
    assert recorded.data.tags["querylens.run_id"] == run.run_id
    params = recorded.data.params
    assert params["cluster.n_clusters"] == "6" and params["success.max_epochs"] == "20"
    assert params["run.database"] == run.database
    assert json.loads(params["cluster.sweep_clusters"]) == [4, 6]
    metrics = recorded.data.metrics
    rows = run.spark.table(f"{run.database}.model_metrics").where(
        f"run_id = '{run.run_id}'").collect()
    assert len(rows) > 20
    for r in rows:
        assert metrics[f"{r['model']}/{r['split']}/{r['metric']}"] == pytest.approx(r["value"])
    for stage in ("ingest", "embed", "cluster", "success", "recommend", "report"):
        assert metrics[f"seconds/{stage}"] == pytest.approx(run.timings[stage])
    assert set(facts["models"]) == {"cluster", "success"}
    assert facts["models"]["success"]["version"] == run.facts["success"]["model"]
    assert facts["models"]["cluster"]["version"] == str(run.facts["cluster"]["model_version"])
    report = {Path(a.path).name for a in client.list_artifacts(facts["run_id"], "report")}
    assert "report.html" in report and any(name.endswith(".png") for name in report)


def test_logged_success_model_scores_like_success_predictions(tracked: tuple[Run, str]) -> None:
    """Inputs rebuilt with pandas: each query's embedding and its cluster's success rate over
    the labelled train split (the train rate overall for clusters without one)."""
    run, uri = tracked
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(run.facts["mlflow"]["models"]["success"]["uri"])
    names = model.metadata.get_input_schema().input_names()
    predictions = to_pandas(run.read("success_predictions")).merge(
        to_pandas(run_embeddings(run)), on="query_key")
    labelled = predictions["success"].notna()
    train = predictions[labelled & (predictions["split"] == "train")].assign(
        y=lambda f: f["success"].astype(float))
    rates = train.groupby("cluster_id")["y"].mean()
    predictions["cluster_success_rate"] = predictions["cluster_id"].map(rates).astype(
        float).fillna(train["y"].mean())
    scored = model.predict(predictions[names])
    assert len(predictions) == run.counts["success_predictions"] > 100
    np.testing.assert_allclose(scored["p_success"].to_numpy(),
                               predictions["p_success"].to_numpy(), rtol=0, atol=1e-6)


def test_logged_cluster_model_assigns_like_cluster_assignments(tracked: tuple[Run, str]) -> None:
    run, uri = tracked
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(run.facts["mlflow"]["models"]["cluster"]["uri"])
    frame = to_pandas(run.read("cluster_assignments").select("query_key", "cluster_id")).merge(
        to_pandas(run_embeddings(run)), on="query_key")
    got = model.predict(frame[["embedding"]])["cluster_id"].to_numpy()
    assert len(frame) == run.counts["cluster_assignments"]
    np.testing.assert_array_equal(got, frame["cluster_id"].to_numpy())


def test_tracking_off_imports_no_mlflow() -> None:
    code = ("import sys, types\n"
            "from querylens.app.jobs import JOBS\n"
            "from querylens.runtime.config import load_config\n"
            "from querylens.tracking import track_run\n"
            "run = types.SimpleNamespace(config=load_config(None, []))\n"
            "assert track_run(run) is None\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
