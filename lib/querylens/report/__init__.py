"""The run report: figures and a browsable cluster atlas built from the output tables alone."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from querylens.report.data import ReportData, load_report_data
from querylens.report.figures import FigureOptions, RenderedFigure, render_figures
from querylens.report.html import render_html
from querylens.runtime.config import Config
from querylens.runtime.errors import ConfigError
from querylens.runtime.tables import require_run_id

log = logging.getLogger("querylens")

REPORT_FILE = "report.html"

__all__ = ["REPORT_FILE", "ReportData", "build_report", "load_report_data", "report_dir"]


def report_dir(config: Config, run_id: str) -> Path:
    """The folder holding `run_id`'s report and its PNGs: `run.output_dir/run_id` (a run id
    that is not a valid one, or would name a folder outside `run.output_dir`, is refused)."""
    root = Path(config.run.output_dir).resolve()
    out = (root / require_run_id(run_id)).resolve()
    if out.parent != root:
        raise ConfigError(f"run id {run_id!r} names a folder outside {root}")
    return Path(config.run.output_dir) / run_id


def build_report(
    spark: SparkSession, config: Config, run_id: str, manifest: dict[str, Any] | None = None
) -> Path:
    """Write `report.html` and its PNGs for `run_id`; return the HTML's path.

    `manifest` (decoded like a `runs` row) stands in for the `runs` table while the run that
    writes the report has not recorded itself yet.
    """
    start = time.perf_counter()
    r = config.report
    data = load_report_data(
        spark, config.run.database, run_id, manifest, n_failing=r.n_failing,
        n_recommendations=r.n_recommendations, knife_sample=r.knife_sample,
        eval_sample=r.eval_sample, map_sample=r.map_sample, seed=r.seed)
    log.info("[%s] report: read the tables in %.1fs", run_id, time.perf_counter() - start)
    out = report_dir(config, run_id)
    figures = render_figures(data, out, FigureOptions(r.projection, r.knife_refit_sample, r.seed))
    drawn = sum(f.path is not None for f in figures)
    log.info("[%s] report: %d of %d figures drawn in %.1fs", run_id, drawn, len(figures),
             time.perf_counter() - start)
    path = out / REPORT_FILE
    path.write_text(render_html(data, figures), encoding="utf-8")
    write_index(out, figures)
    log.info("[%s] report: %s written in %.1fs", run_id, path, time.perf_counter() - start)
    return path


def write_index(out: Path, figures: list[RenderedFigure]) -> None:
    """`figures.json` beside the report: each figure's file or why it is missing."""
    index = [{"name": f.name, "title": f.title,
              "file": f.path.name if f.path else None, "missing": f.missing or None}
             for f in figures]
    (out / "figures.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
