"""Issue #15: the blend vs the seed's nearest-cluster rule on demo logs, in one run.

Generates demo logs into a work folder, runs ingest -> embed -> cluster -> success -> recommend
(`recommend.strategy=blend`, the default) and prints the recommend stage's held-out metrics for
every model side by side (the blend, the seed rule `recommend_nearest_cluster` and each source
alone, all from the same sessions, candidates and hold-out), the demo-truth metrics, and the
misspelt-brand recall of the written recommendations: of the misspelt-brand queries that are
failing and whose brand has a recommendable correctly spelt query, the share whose suggestions
include the brand's correct spelling (per query and per misspelling of the vocabulary).

    .venv/bin/python bench/recommend_blend.py --set generate.n_events=200000
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import cast

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from querylens.app.pipeline import run_pipeline
from querylens.demo.ground_truth import write_demo_logs
from querylens.runtime.config import load_config
from querylens.runtime.runs import Run
from querylens.runtime.session import build_session
from querylens.runtime.tables import read_run_table

STAGES = ["ingest", "embed", "cluster", "success", "recommend"]
MODELS = ["recommend_blend", "recommend_nearest_cluster", "recommend_reformulation",
          "recommend_lexical"]


def misspelt_recall(spark: SparkSession, run: Run) -> dict[str, float]:
    """Share of failing misspelt-brand queries (brand with a recommendable correct spelling)
    whose recommendations include the correct spelling, per query and per misspelt text."""
    db = run.database
    truth = spark.table(f"{db}.demo_ground_truth").select("query_key", "query", "kind",
                                                         "true_brand")
    recs = read_run_table(spark, db, "recommendations", run.run_id)
    labels = read_run_table(spark, db, "success_labels", run.run_id)
    queries = read_run_table(spark, db, "queries", run.run_id).select("query_key", "query")
    good = labels.where(F.col("success") & (F.col("support") >= run.config.recommend.min_support))
    brands = good.join(queries, "query_key").join(truth.select("query_key", "true_brand"),
                                                  "query_key")
    stocked = brands.where(F.col("true_brand").isNotNull()).where(
        F.col("query").contains(F.col("true_brand"))).select("true_brand").distinct()
    misspelt = truth.where(F.col("kind") == "misspelt_brand").join(stocked, "true_brand")
    failing = recs.select("query_key").distinct()
    found = recs.where(F.col("rec_query").isNotNull()).join(
        misspelt.select("query_key", "true_brand"), "query_key").groupBy("query_key").agg(
        F.max(F.col("rec_query").contains(F.col("true_brand")).cast("int")).alias("hit"))
    per_query = cast(pd.DataFrame, misspelt.join(failing, "query_key").join(
        found, "query_key", "left").fillna({"hit": 0}).toPandas())
    if per_query.empty:
        return {"misspelt_queries": 0.0}
    word = per_query["query"].str.split().str[:2].str.join(" ")
    by_text = per_query.assign(word=word).groupby("word")["hit"].max()
    return {"misspelt_queries": float(len(per_query)),
            "misspelt_query_recall": float(per_query["hit"].mean()),
            "misspelt_texts": float(len(by_text)),
            "misspelt_text_recall": float(by_text.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--root", default=None, help="work folder (default: a temp folder)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="recommend-blend-"))
    config = load_config(None, [
        f"run.warehouse_dir={root / 'warehouse'}", f"run.metastore_dir={root / 'metastore'}",
        f"run.output_dir={root / 'output'}", f"input.path={root / 'events'}",
        "cluster.n_clusters=20", "cluster.n_components=50", "cluster.sweep=false",
        *args.overrides,
    ])
    spark = build_session(config)
    start = time.perf_counter()
    write_demo_logs(spark, config)
    generate_seconds = time.perf_counter() - start
    run = Run(spark, config)
    run_pipeline(run, STAGES)
    metrics = cast(pd.DataFrame, read_run_table(spark, config.run.database, "model_metrics",
                                                run.run_id).toPandas())
    ours = metrics[metrics["model"].isin(MODELS)]
    table = ours.pivot_table(index=["split", "metric"], columns="model", values="value")
    table = table[[m for m in MODELS if m in table.columns]]
    print(f"machine: {platform.platform()}, {platform.processor() or 'cpu'}")
    print(f"root: {root}; run {run.run_id}; generate {generate_seconds:.0f}s; "
          f"stage seconds {json.dumps(run.timings)}")
    print(json.dumps(run.facts.get("recommend", {}), default=str, indent=1))
    with pd.option_context("display.width", 200, "display.max_columns", 10):
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    blend, seed = table.get("recommend_blend"), table.get("recommend_nearest_cluster")
    if blend is not None and seed is not None:
        for metric in ("mrr", "hit_at_5", "hit_at_1"):
            key = ("holdout", metric)
            if key in table.index and seed[key] > 0:
                print(f"blend / seed rule {metric}: {blend[key] / seed[key]:.2f}x")
    print(json.dumps(misspelt_recall(spark, run), indent=1))
    others = metrics[metrics["model"].isin(["recommendations"])]
    print(others.sort_values(["split", "metric"]).to_string(index=False))


if __name__ == "__main__":
    main()
