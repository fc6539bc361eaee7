"""Log a querylens run to MLflow: config as parameters, `model_metrics`, stage timings and row
counts as metrics, the cluster and success models as pyfunc models, the report as artifacts."""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema, TensorSpec

from querylens.runtime.catalog import path_or_uri
from querylens.runtime.config import to_dict
from querylens.runtime.runs import METRICS_TABLE, Run
from querylens.runtime.tables import table_exists
from querylens.tracking import FACTS_KEY
from querylens.tracking.pyfunc import input_example

log = logging.getLogger("querylens")

MAX_PARAM_LENGTH = 6000
MODEL_CODE = Path(__file__).with_name("model_code.py")
MODEL_REQUIREMENTS = ("mlflow-skinny", "torch", "numpy", "pandas", "scipy", "scikit-learn",
                      "pyspark")


def flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config data as `section.key` -> text (lists and maps as JSON), MLflow-sized."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and prefix == "":
            out.update(flat_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out[name] = text[:MAX_PARAM_LENGTH]
    return out


def run_metrics(run: Run) -> dict[str, float]:
    """`model_metrics` rows as `model/split/metric`, stage seconds as `seconds/<stage>`, table
    row counts as `rows/<table>`."""
    found = {f"seconds/{stage}": float(s) for stage, s in run.timings.items()}
    found.update({f"rows/{table}": float(n) for table, n in run.counts.items()})
    if table_exists(run.spark, run.database, METRICS_TABLE):
        for r in run.read(METRICS_TABLE).collect():
            found[f"{r['model']}/{r['split']}/{r['metric']}"] = float(r["value"])
    return found


def signature(kind: str, extra: list[str]) -> ModelSignature:
    """Inputs: `embedding` (an array of numbers) and the extra numeric features; one output."""
    inputs: list[ColSpec | TensorSpec] = [ColSpec(Array(DataType.double), "embedding"),
              *[ColSpec(DataType.double, name) for name in extra]]
    output: ColSpec = (ColSpec(DataType.double, "p_success") if kind == "success"
              else ColSpec(DataType.long, "cluster_id"))
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([output]))


def model_folders(run: Run) -> dict[str, tuple[Path, str]]:
    """kind -> (saved model folder, version) of the models this run's facts name."""
    found: dict[str, tuple[Path, str]] = {}
    cluster = run.facts.get("cluster", {})
    if cluster.get("model_version") is not None:
        version = str(cluster["model_version"])
        found["cluster"] = (Path(cluster["model_dir"]) / f"v{version}", version)
    success = run.facts.get("success", {})
    if success.get("model_path"):
        found["success"] = (Path(success["model_path"]), str(success["model"]))
    return found


def log_model(kind: str, folder: Path) -> str:
    """Log the saved model in `folder` as the pyfunc model `<kind>_model`; return its URI."""
    example = input_example(kind, folder)
    info = mlflow.pyfunc.log_model(
        name=f"{kind}_model", python_model=str(MODEL_CODE), artifacts={kind: str(folder)},
        signature=signature(kind, list(example.columns[1:])), input_example=example,
        pip_requirements=[f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS])
    return str(info.model_uri)


def report_files(run: Run) -> list[Path]:
    """The report page and its figures, when this run has a report."""
    path = run.facts.get("report", {}).get("path")
    if not path or not Path(path).is_file():
        return []
    page = Path(path)
    return [page, *sorted(page.parent.glob("*.png"))]


def experiment_id(run: Run) -> str:
    """The id of `tracking.experiment`, created when missing with its artifacts under
    `<run.output_dir>/mlflow-artifacts` (MLflow's own default is `./mlruns` in the working
    folder)."""
    name = run.config.tracking.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = path_or_uri(str(Path(run.config.run.output_dir) / "mlflow-artifacts"))
    if "://" not in location:
        location = Path(location).as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def log_run(run: Run) -> str:
    """Log `run` into MLflow (continuing its MLflow run when the facts name one); return the
    MLflow run id. Parameters already logged are kept; a model is logged again only when the
    run's model version changed."""
    cfg = run.config.tracking
    assert cfg.mlflow_uri, "log_run needs tracking.mlflow_uri"
    facts = run.facts.setdefault(FACTS_KEY, {})
    facts.pop("error", None)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    experiment = mlflow.set_experiment(experiment_id=experiment_id(run))
    tags = {"querylens.run_id": run.run_id, "querylens.database": run.database}
    with mlflow.start_run(run_id=facts.get("run_id"), run_name=run.run_id, tags=tags) as active:
        known = active.data.params
        params = {k: v for k, v in flat_params(to_dict(run.config)).items() if k not in known}
        if params:
            mlflow.log_params(params)
        mlflow.log_metrics(run_metrics(run))
        logged = facts.setdefault("models", {})
        for kind, (folder, version) in model_folders(run).items():
            if logged.get(kind, {}).get("version") != version:
                logged[kind] = {"version": version, "uri": log_model(kind, folder)}
        for path in report_files(run):
            mlflow.log_artifact(str(path), artifact_path="report")
        facts.update({"run_id": active.info.run_id, "experiment_id": experiment.experiment_id})
    log.info("[%s] MLflow run %s in experiment %r (%s)", run.run_id, facts["run_id"],
             cfg.experiment, ", ".join(f"{k} model {v['uri']}" for k, v in logged.items())
             or "no models")
    return str(facts["run_id"])
