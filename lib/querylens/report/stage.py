"""The report stage: this run's tables -> `report.html` and its PNGs (files, no tables)."""

from __future__ import annotations

from querylens.report import build_report
from querylens.report.data import manifest_of
from querylens.runtime.runs import Run
from querylens.runtime.stages import Stage


def report_stage(run: Run) -> None:
    """This run's tables -> `report.html` and its PNGs under `run.output_dir/run_id`."""
    path = build_report(run.spark, run.config, run.run_id, manifest_of(run))
    run.facts["report"] = {"path": str(path)}


REPORT = Stage("report", report_stage, uses=(
    "queries", "query_embeddings", "cluster_assignments", "clusters", "cluster_sweep",
    "pca_variance", "success_labels", "cluster_success", "success_predictions",
    "success_calibration", "model_metrics", "recommendations", "demo_ground_truth"))
