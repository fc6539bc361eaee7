"""Issue #15: the recommend stage alone, re-run under cProfile on a work folder that
`bench/recommend_blend.py --root ROOT` filled (its latest run), with the same printout: the
stage's seconds, the querylens functions that took the most cumulative time (Spark actions
included) and the held-out and misspelt-brand metrics.

    .venv/bin/python bench/recommend_profile.py --root /tmp/rb20k [--set key=value ...]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from pathlib import Path

from pyspark.sql import functions as F

from demo_setup import demo_config, parse_args
from querylens.app.pipeline import run_pipeline
from querylens.runtime.runs import Run
from querylens.runtime.session import build_session
from recommend_blend import print_results


def main() -> None:
    args = parse_args(__doc__)
    assert args.root, "--root: the work folder of an earlier recommend_blend.py run"
    config = demo_config(Path(args.root), ["cluster.n_clusters=20", "cluster.n_components=50",
                                           "cluster.sweep=false", *args.overrides])
    spark = build_session(config)
    latest = spark.table(f"{config.run.database}.success_labels").agg(F.max("run_id")).first()
    assert latest is not None
    run = Run.open(spark, config, latest[0])
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    run_pipeline(run, ["recommend"])
    profile.disable()
    print(f"recommend stage re-run: {time.perf_counter() - start:.1f} s (run {run.run_id})")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("cumulative")
    stats.print_stats(r"querylens/(recommend|success)/", 30)
    print(out.getvalue())
    print_results(spark, run)


if __name__ == "__main__":
    main()
