"""The jobs: thin glue between config, the session and the library."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from querylens.config import Config
from querylens.pipeline import STAGES, run_pipeline
from querylens.runs import Run
from querylens.session import build_session

log = logging.getLogger("querylens")


def start_run(config: Config, args: argparse.Namespace) -> Run:
    """A run in a session built from `config`, with --run-id when given."""
    spark = build_session(config)
    return Run(spark, config, **({"run_id": args.run_id} if args.run_id else {}))


def pipeline_job(config: Config, args: argparse.Namespace) -> None:
    """Every stage in one Spark application."""
    run = start_run(config, args)
    run_pipeline(run)
    print_summary(run)


def stage_job(stage: str) -> Callable[[Config, argparse.Namespace], None]:
    def job(config: Config, args: argparse.Namespace) -> None:
        if stage != "ingest" and not args.run_id:
            raise ValueError(f"the {stage} job needs --run-id of a run whose ingest has run")
        run = start_run(config, args)
        run_pipeline(run, [stage])
        log.info("run id: %s", run.run_id)

    job.__doc__ = f"Only the {stage} stage."
    return job


def score_job(config: Config, args: argparse.Namespace) -> None:
    """Assign new queries to a saved cluster model without refitting.

    Without --run-id it ingests `input.*` (e.g. new days of logs) into a new run first;
    with --run-id it scores that run's queries. The model is `cluster.score_version`
    (default: the latest) under `cluster.model_dir`.
    """
    run = start_run(config, args)
    run_pipeline(run, ["embed", "score"] if args.run_id else ["ingest", "embed", "score"])
    log.info("run id: %s (scored with cluster model v%s)", run.run_id,
             run.facts["score"]["model_version"])


def report_job(config: Config, args: argparse.Namespace) -> None:
    """Rebuild the HTML report of --run-id from its tables alone (no stage reruns)."""
    from querylens.report import build_report

    if not args.run_id:
        raise ValueError("the report job needs --run-id of the run to report on")
    path = build_report(build_session(config), config, args.run_id)
    print(f"report: {path.resolve()}")


def generate_logs_job(config: Config, args: argparse.Namespace) -> None:
    """Write demo search logs and their ground truth."""
    from querylens.demo import write_demo_logs

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
    print("\n".join(lines))


JOBS: dict[str, Callable[[Config, argparse.Namespace], None]] = {
    "pipeline": pipeline_job,
    "generate_logs": generate_logs_job,
    "score": score_job,
    **{name: stage_job(name) for name in STAGES},
    "report": report_job,
}
