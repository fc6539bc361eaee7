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

import json
import platform
from typing import cast

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from demo_setup import demo_session, parse_args
from querylens.app.pipeline import run_pipeline
from querylens.demo.vocabulary import MISSPELLINGS
from querylens.runtime.runs import Run
from querylens.runtime.tables import read_run_table

STAGES = ["ingest", "embed", "cluster", "success", "recommend"]
MODELS = ["recommend_blend", "recommend_nearest_cluster", "recommend_reformulation",
          "recommend_lexical"]


def misspelling_of(query: str) -> str | None:
    """The vocabulary's misspelling that `query` starts with (the longest), None if none."""
    starts = [m for m, _ in MISSPELLINGS if query == m or query.startswith(m + " ")]
    return max(starts, key=len) if starts else None


def misspelt_recall(spark: SparkSession, run: Run) -> dict[str, float]:
    """Of the failing misspelt-brand queries whose brand has a labelled successful correctly
    spelt query (support >= the recommend stage's least), the share whose recommendations
    include the correct spelling: per query, and per misspelling of the vocabulary (the mean
    over misspellings of their queries' recall, and the share recalled for every query)."""
    db = run.database
    truth = spark.table(f"{db}.demo_ground_truth").select("query_key", "query", "kind",
                                                         "true_brand")
    recs = read_run_table(spark, db, "recommendations", run.run_id)
    labels = read_run_table(spark, db, "success_labels", run.run_id)
    queries = read_run_table(spark, db, "queries", run.run_id).select("query_key", "query")
    least = max(run.config.recommend.min_support, run.config.success.min_support)
    good = labels.where(F.col("success") & (F.col("support") >= least))
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
    per_query["misspelling"] = per_query["query"].map(misspelling_of)
    by_text = per_query.dropna(subset=["misspelling"]).groupby("misspelling")["hit"]
    missed = per_query.loc[per_query["hit"] == 0, "query"]
    print("missed:", "; ".join(sorted(missed)[:40]))
    return {"misspelt_queries": float(len(per_query)),
            "misspelt_query_recall": float(per_query["hit"].mean()),
            "misspellings": float(by_text.ngroups),
            "misspelling_mean_recall": float(by_text.mean().mean()),
            "misspellings_all_recalled": float((by_text.min() == 1).mean())}


def main() -> None:
    args = parse_args(__doc__)
    root, config, spark, generate_seconds = demo_session(
        args.root, "recommend-blend-",
        ["cluster.n_clusters=20", "cluster.n_components=50", "cluster.sweep=false",
         *args.overrides])
    run = Run(spark, config)
    run_pipeline(run, STAGES)
    print(f"root: {root}; run {run.run_id}; generate {generate_seconds:.0f}s")
    print_results(spark, run)


def print_results(spark: SparkSession, run: Run) -> None:
    """The run's stage times, recommend facts, held-out metrics per model side by side, the
    blend / seed-rule ratios and the misspelt-brand recall."""
    metrics = cast(pd.DataFrame, read_run_table(spark, run.config.run.database, "model_metrics",
                                                run.run_id).toPandas())
    ours = metrics[metrics["model"].isin(MODELS)]
    table = ours.pivot_table(index=["split", "metric"], columns="model", values="value")
    table = table[[m for m in MODELS if m in table.columns]]
    print(f"machine: {platform.platform()}, {platform.processor() or 'cpu'}")
    print(f"stage seconds {json.dumps(run.timings)}")
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
