"""Experiment tracking: each run's config, metrics, timings, models and report in MLflow.

Off unless `tracking.mlflow_uri` is set; then `querylens.tracking.mlflow_run` (and mlflow, the
`tracking` extra) is imported, never before.
"""

from __future__ import annotations

import logging

from querylens.runtime.errors import first_line
from querylens.runtime.runs import Run

log = logging.getLogger("querylens")

FACTS_KEY = "mlflow"


def track_run(run: Run) -> str | None:
    """Log `run` to MLflow when `tracking.mlflow_uri` is set; return the MLflow run id.

    The id, experiment and logged model URIs go to `run.facts["mlflow"]`, so the `runs`
    manifest row records them and a later job of the same run continues the same MLflow run.
    A tracking failure is logged and kept in the facts (`error`); it does not fail the run.
    """
    if not run.config.tracking.mlflow_uri:
        return None
    from querylens.tracking.mlflow_run import log_run

    try:
        return log_run(run)
    except Exception as exc:
        run.facts.setdefault(FACTS_KEY, {})["error"] = first_line(exc)
        log.error("[%s] MLflow tracking failed (%s); the run goes on untracked", run.run_id,
                  first_line(exc))
        return None
