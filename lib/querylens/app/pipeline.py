"""The default stage registry and `run_pipeline`, which runs stages and records the run."""

from __future__ import annotations

import logging

from querylens.cluster.stage import CLUSTER, SCORE
from querylens.embed.stage import EMBED
from querylens.ingest.stage import INGEST
from querylens.recommend.stage import RECOMMEND
from querylens.report.stage import REPORT
from querylens.runtime.errors import first_line
from querylens.runtime.faults import arm
from querylens.runtime.provenance import record_stage_tasks
from querylens.runtime.runs import Run, publish_latest_views
from querylens.runtime.stages import StageRegistry, check_inputs
from querylens.success.stage import SUCCESS
from querylens.tracking import track_run

log = logging.getLogger("querylens")

STAGES = StageRegistry(
    [INGEST, EMBED, CLUSTER, SUCCESS, RECOMMEND, REPORT, SCORE],
    pipeline=("ingest", "embed", "cluster", "success", "recommend", "report"),
)


def run_pipeline(run: Run, names: list[str] | None = None,
                 registry: StageRegistry = STAGES) -> None:
    """Run the stages `names` (the registry's pipeline by default) in order and record the run.

    Every stage's inputs are checked before any stage starts. The run is recorded as `running`,
    then `failed` or `completed`, merged into its `runs` row; the `<table>_latest` views move
    only when the run ends, and never onto a run that failed. With `tracking.mlflow_uri` set,
    a completed invocation is logged to MLflow first (`track_run`), so the row names the
    MLflow run (`facts_json.mlflow.run_id`).
    """
    stages = [registry[name] for name in names or registry.pipeline]
    check_inputs(run, stages, registry)
    run.record("running")
    arm(run.spark, run.config.run.fail_first_attempt)
    try:
        for stage in stages:
            with run.stage(stage.name), record_stage_tasks(run, stage.name):
                stage.execute(run)
    except BaseException as exc:
        log.error("[%s] run failed: %s", run.run_id, first_line(exc))
        run.record("failed")
        publish_latest_views(run.spark, run.database)
        raise
    finally:
        arm(run.spark, [])
    track_run(run)
    run.record("completed")
    publish_latest_views(run.spark, run.database)
