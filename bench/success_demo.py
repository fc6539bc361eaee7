"""Success model and recommendations on the demo logs, scored against the generator's truth.

Generates demo logs into a temporary folder, runs ingest -> embed -> cluster -> success ->
recommend, and prints the `model_metrics` rows that answer issue #6's demo targets: the NN's
test ROC-AUC vs the cluster-rate, majority and logistic-regression baselines, and the true
success probability and category of recommended vs failing queries.

    .venv/bin/python bench/success_demo.py [--set generate.n_events=200000 ...]
"""

from __future__ import annotations

import json
import platform

from demo_setup import demo_session, parse_args
from querylens.app.pipeline import run_pipeline
from querylens.runtime.runs import Run
from querylens.runtime.tables import read_run_table

STAGES = ["ingest", "embed", "cluster", "success", "recommend"]


def main() -> None:
    args = parse_args(__doc__)
    root, config, spark, generate_seconds = demo_session(
        args.root, "success-demo-", ["cluster.sweep=false", *args.overrides])
    run = Run(spark, config)
    run_pipeline(run, STAGES)
    metrics = read_run_table(spark, config.run.database, "model_metrics", run.run_id).toPandas()
    ours = metrics[metrics["model"] != "cluster_kmeans"]
    table = ours.sort_values(["model", "split", "metric"]).set_index(["model", "split", "metric"])
    print(f"machine: {platform.platform()}, {platform.processor() or 'cpu'}")
    print(f"root: {root}; run {run.run_id}; generate {generate_seconds:.0f}s; "
          f"stage seconds {json.dumps(run.timings)}")
    print(json.dumps({k: v for k, v in run.facts.get("success", {}).items()
                      if k not in ("labels",)}, default=str, indent=1))
    print(json.dumps(run.facts.get("recommend", {}), default=str, indent=1))
    with_pd_options(lambda: print(table.to_string(float_format=lambda v: f"{v:.4f}")))


def with_pd_options(fn) -> None:
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", 40):
        fn()


if __name__ == "__main__":
    main()
