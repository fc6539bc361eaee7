"""The jobs: thin glue between config, the session and the library."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from querylens.app.pipeline import STAGES, run_pipeline
from querylens.runtime.config import Config, mask_value
from querylens.runtime.errors import ConfigError
from querylens.runtime.runs import Run, fail_abandoned_runs
from querylens.runtime.session import build_session

log = logging.getLogger("querylens")


def start_run(config: Config, args: argparse.Namespace) -> Run:
    """A run in a session built from `config`, with --run-id when given; runs whose driver
    died while `running` are marked failed first (`fail_abandoned_runs`)."""
    spark = build_session(config)
    fail_abandoned_runs(spark, config)
    return Run.open(spark, config, args.run_id)


def pipeline_job(config: Config, args: argparse.Namespace) -> None:
    """Every stage in one Spark application."""
    run = start_run(config, args)
    run_pipeline(run)
    print_summary(run)


def stage_job(stage: str) -> Callable[[Config, argparse.Namespace], None]:
    def job(config: Config, args: argparse.Namespace) -> None:
        if stage != "ingest" and not args.run_id:
            raise ConfigError(f"the {stage} job needs --run-id of a run whose ingest has run")
        run = start_run(config, args)
        if stage == "report" and run.recorded() is None:
            raise ConfigError(f"run {run.run_id} does not exist in {run.database}.runs: "
                              f"nothing to report (run the pipeline first)")
        run_pipeline(run, [stage])
        log.info("run id: %s", run.run_id)
        if stage == "report":
            print(f"report: {Path(run.facts['report']['path']).resolve()}")

    job.__doc__ = f"Only the {stage} stage."
    return job


def score_job(config: Config, args: argparse.Namespace) -> None:
    """Assign new queries to a saved cluster model without refitting.

    Without --run-id, or with the id of a run that has not ingested, it ingests `input.*`
    (e.g. new days of logs) first; otherwise it scores that run's queries. The model is
    `cluster.score_version` (default: the latest) under `cluster.model_dir`.
    """
    run = start_run(config, args)
    run_pipeline(run, ["embed", "score"] if "ingest" in run.timings else
                 ["ingest", "embed", "score"])
    log.info("run id: %s (scored with cluster model v%s)", run.run_id,
             run.facts["score"]["model_version"])


def generate_logs_job(config: Config, args: argparse.Namespace) -> None:
    """Write demo search logs and their ground truth."""
    from querylens.demo.ground_truth import write_demo_logs

    write_demo_logs(build_session(config), config)


def print_summary(run: Run) -> None:
    db = run.database
    clusters = run.spark.sql(
        f"SELECT cluster_id, label, size, top_queries FROM {db}.clusters "
        f"WHERE run_id = '{run.run_id}' ORDER BY size DESC LIMIT 5"
    ).collect()
    lines = [f"run {run.run_id} completed; tables in database '{db}' "
             f"(warehouse {run.config.run.warehouse_dir}):"]
    lines += [f"  {db}.{t}: {n} rows" for t, n in sorted(run.counts.items())]
    lines.append("largest clusters:")
    lines += [f"  #{r.cluster_id} {r.label} ({r.size} queries): {', '.join(r.top_queries[:5])}"
              for r in clusters]
    lines.append(f"query them: spark.sql(\"SELECT * FROM {db}.clusters_latest\") "
                 f"(or any table WHERE run_id = '{run.run_id}')")
    if "report" in run.facts:
        lines.append(f"report: {Path(run.facts['report']['path']).resolve()}")
    if run.facts.get("mlflow", {}).get("run_id"):
        lines.append(f"MLflow run: {run.facts['mlflow']['run_id']} "
                     f"(tracking URI {mask_value(run.config.tracking.mlflow_uri or '')})")
    print("\n".join(lines))


JOBS: dict[str, Callable[[Config, argparse.Namespace], None]] = {
    "pipeline": pipeline_job,
    "generate_logs": generate_logs_job,
    "score": score_job,
    **{stage.name: stage_job(stage.name) for stage in STAGES if stage.name != "score"},
}
