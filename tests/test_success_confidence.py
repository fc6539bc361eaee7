"""Success numbers that say how sure they are: failure evidence from what came next, Wilson
intervals, a model that refuses too few labels, report tiles with split and size."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from scipy.stats import norm

from querylens.ingest.aggregate import ingest
from querylens.report.data import ReportData
from querylens.report.html import labels_html, rate_badge, tiles_html
from querylens.runtime.config import Config, load_config
from querylens.runtime.runs import Run
from querylens.runtime.tables import read_run_table
from querylens.success.labels import label_queries
from querylens.success.metrics import wilson_columns
from querylens.success.stage import split_problem, success_stage
from tests.helpers import make_config, plant_embeddings, write_fixture

T0 = datetime(2026, 10, 1, 12, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


EVENTS = [
    ("red dres", "s1", at(0), 0, 0),
    ("red dress", "s1", at(20), 1, 40),
    ("red dress", "s1", at(30), 0, 40),
    ("boots", "s1", at(90), 0, 12),
    ("boots", "s2", at(0), 0, 12),
    ("red dres", "s2", at(60), 0, 0),
    ("boots", "s2", at(121), 1, 12),
    ("boots", "s3", at(5), 0, 0),
    ("boots", None, at(0), 0, 12),
    ("red dres", None, at(1), 0, 0),
    ("boo", "s4", at(0), 0, 12),
    ("boots", "s4", at(2), 0, 12),
    ("red dress", "s4", at(50), 2, None),
]
# window 60 s; s1: "red dres"->"red dress" 20 s (yes), "red dress"->same (no), "red dress"->
# "boots" 60 s (yes, edge); s2: "boots"->"red dres" 60 s (yes), "red dres"->"boots" 61 s (no);
# s3 is a session of one search; null sessions never reformulate; s4: "boo" is a typing
# fragment of "boots" (folded, not a search), "boots"->"red dress" 48 s (yes).
REFORMULATED = {"red dres": 1, "red dress": 1, "boots": 2}
ZERO_RESULTS = {"red dres": 3, "red dress": 0, "boots": 1}
SEARCHES = {"red dres": 3, "red dress": 3, "boots": 6}


@pytest.fixture(scope="module")
def evidence(spark: SparkSession, config: Config, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, dict]:
    path = tmp_path_factory.mktemp("evidence") / "events"
    spark.createDataFrame(EVENTS, "query string, session_id string, ts timestamp, clicks int, "
                          "results_shown int").write.parquet(str(path))
    cfg = load_config(None, [f"run.warehouse_dir={config.run.warehouse_dir}",
                             f"run.metastore_dir={config.run.metastore_dir}",
                             "input.format=parquet", f"input.path={path}",
                             "input.reformulation_seconds=60", "input.typing_fragment_seconds=10"])
    queries, _ = ingest(spark, cfg.input, cfg.normalize)
    return {r["query"]: r.asDict() for r in queries.collect()}


def test_reformulated_and_zero_result_searches_equal_a_hand_count(evidence: dict) -> None:
    assert {q: r["n_searches"] for q, r in evidence.items()} == SEARCHES
    assert {q: r["reformulated_searches"] for q, r in evidence.items()} == REFORMULATED
    assert {q: r["zero_result_searches"] for q, r in evidence.items()} == ZERO_RESULTS


def test_failure_evidence_discounts_the_interaction_score(spark: SparkSession,
                                                         evidence: dict) -> None:
    rows = [(r["query_key"], r["n_searches"], r["n_sessions"], r["clicks"], 0, 0,
             r["searches_with_click"], 0, 0, r["reformulated_searches"],
             r["zero_result_searches"]) for r in evidence.values()]
    queries = spark.createDataFrame(rows, (
        "query_key string, n_searches long, n_sessions long, clicks long, add_to_bags long, "
        "purchases long, searches_with_click long, searches_with_add_to_bag long, "
        "searches_with_purchase long, reformulated_searches long, zero_result_searches long"))
    assignments = queries.select("query_key", F.lit(0).alias("cluster_id"))
    config = load_config(None, ["success.reformulation_weight=0.5",
                                "success.zero_result_weight=1.0", "success.min_support=1",
                                "success.threshold=0.01"]).success
    labels, stats = label_queries(queries, assignments, config)
    got = {r["query_key"]: r for r in labels.collect()}
    for row in evidence.values():
        n = row["n_searches"]
        interaction = row["searches_with_click"] / n / 7
        failure = min(1.0, 0.5 * row["reformulated_searches"] / n
                      + row["zero_result_searches"] / n)
        mine = got[row["query_key"]]
        assert mine["interaction_score"] == pytest.approx(interaction, abs=1e-12)
        assert mine["success_score"] == pytest.approx(interaction * (1 - failure), abs=1e-12)
    red_dres = got[evidence["red dres"]["query_key"]]
    assert red_dres["success_score"] == 0.0 and red_dres["success"] is False
    assert stats.with_failure_evidence == 3 and stats.unlabelled == 0


def hand_wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """statsmodels' proportion_confint(method='wilson') written out in float64."""
    crit = norm.isf((1 - confidence) / 2)
    q = k / n
    denom = 1 + crit**2 / n
    center = (q + crit**2 / (2 * n)) / denom
    dist = crit * np.sqrt(q * (1 - q) / n + crit**2 / (4 * n**2)) / denom
    return center - dist, center + dist


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_wilson_interval_matches_the_formula_and_hand_values(spark: SparkSession,
                                                            confidence: float) -> None:
    pairs = [(0, 1), (1, 1), (3, 10), (7, 7), (50, 120), (1, 1000), (0, 0)]
    df = spark.createDataFrame(pairs, "k long, n long")
    low, high = wilson_columns(F.col("k"), F.col("n"), confidence)
    got = {(r["k"], r["n"]): (r["low"], r["high"])
           for r in df.select("k", "n", low.alias("low"), high.alias("high")).collect()}
    assert got[(0, 0)] == (None, None)
    for k, n in pairs[:-1]:
        assert got[(k, n)] == pytest.approx(hand_wilson(k, n, confidence), abs=1e-12)
    z2 = norm.ppf(0.5 + confidence / 2) ** 2
    assert got[(0, 1)][0] == 0.0 and got[(0, 1)][1] == pytest.approx(z2 / (1 + z2), abs=1e-12)
    assert got[(1, 1)] == pytest.approx((1 / (1 + z2), 1.0), abs=1e-12)


def test_wilson_at_95_percent_by_hand(spark: SparkSession) -> None:
    row = spark.range(1).select(*wilson_columns(F.lit(3), F.lit(10), 0.95)).first()
    z = 1.959963984540054
    p, n = 0.3, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (row[0], row[1]) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (row[0], row[1]) == pytest.approx((0.1078, 0.6032), abs=1e-4)


def test_split_problem_names_each_short_split() -> None:
    classes = {"train": {"successes": 40, "failures": 38},
               "validation": {"successes": 9, "failures": 12},
               "test": {"successes": 10, "failures": 10}}
    problem = split_problem(classes, 10)
    assert problem is not None
    assert "validation 9 successes / 12 failures" in problem and "test 10" not in problem
    assert "success.min_per_class=10" in problem
    assert split_problem(classes, 9) is None


def tiny_run(spark: SparkSession, root: Path) -> Run:
    """40 labelled queries in 2 clusters: a few per class in validation and test."""
    rng = np.random.default_rng(1)
    n = 40
    keys = [f"t{i:02d}" for i in range(n)]
    clicks = np.arange(n) % 10
    frame = pd.DataFrame({"query_key": keys, "query": keys, "n_searches": 10, "n_sessions": 10,
                          "clicks": clicks, "add_to_bags": 0, "purchases": 0,
                          "searches_with_click": clicks, "searches_with_add_to_bag": 0,
                          "searches_with_purchase": 0})
    spark.sql("CREATE DATABASE IF NOT EXISTS ql_tiny")
    config = make_config(root, "run.database=ql_tiny", "success.backend=driver",
                         "success.min_per_class=10", "success.max_epochs=5")
    run = Run(spark, config, run_id="ql-tiny-run")
    write_fixture(run, "queries", frame)
    write_fixture(run, "cluster_assignments", pd.DataFrame(
        {"query_key": keys, "cluster_id": (np.arange(n) // 2 % 2).astype("int32")}))
    plant_embeddings(run, keys, rng.normal(size=(n, 8)))
    return run


def test_model_refuses_tiny_training_sets_with_a_clear_note(spark: SparkSession,
                                                           spark_root: Path) -> None:
    run = tiny_run(spark, spark_root)
    success_stage(run)
    facts = run.facts["success"]
    assert facts["model"].startswith("skipped: too few labelled queries")
    assert "success.min_per_class=10" in facts["model"]
    classes = facts["split_classes"]
    assert sum(c["successes"] + c["failures"] for c in classes.values()) == 40
    metrics = read_run_table(spark, run.database, "model_metrics", run.run_id).toPandas()
    assert metrics["model"].unique().tolist() == ["labels"]
    assert not metrics["metric"].isin(["roc_auc", "pr_auc", "brier"]).any()
    got = {(r.split, r.metric): r.value for r in metrics.itertuples()}
    for split, counts in classes.items():
        assert got[(split, "successes")] == counts["successes"]
        assert got[(split, "failures")] == counts["failures"]
    assert got[("all", "min_support")] == 5 and got[("all", "unlabelled")] == 0
    rates = read_run_table(spark, run.database, "cluster_success", run.run_id).toPandas()
    for row in rates.itertuples():
        expected = hand_wilson(row.n_successful, row.n_labelled, 0.95)
        assert (row.success_rate_low, row.success_rate_high) == pytest.approx(expected)
    data = ReportData(run.run_id, run.database, {"facts": run.facts, "config": {}},
                      tables={"model_metrics": metrics})
    assert "not trained" in tiles_html(data) and "ROC AUC" not in tiles_html(data)
    note = labels_html(data)
    assert "The success model was not trained: too few labelled queries" in note
    assert "success.min_support=5</b> left <b>0</b> of 40 queries" in note


def metrics_frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model", "split", "metric", "value"])


def test_auc_tile_names_split_and_size() -> None:
    data = ReportData("r", "db", {"facts": {"success": {"model": "mlp-abc"}}}, tables={
        "model_metrics": metrics_frame([("nn", "validation", "roc_auc", 0.7),
                                        ("nn", "test", "roc_auc", 0.8123),
                                        ("nn", "test", "n", 1204.0),
                                        ("nn", "validation", "n", 1100.0)])})
    assert "<b>0.81</b><span>success model ROC AUC · test, n=1,204</span>" in tiles_html(data)
    data.tables["model_metrics"] = metrics_frame([("nn", "validation", "roc_auc", 0.7)])
    assert "ROC AUC · validation, size not recorded" in tiles_html(data)


def test_clusters_with_too_few_labels_are_greyed() -> None:
    data = ReportData("r", "db", {"config": {"success": {"min_cluster_labels": 5}}})
    few = rate_badge({"success_rate": 1.0, "n_labelled": 2}, 0.5, data)
    assert 'class="rate few"' in few and "100%" not in few and "2 labelled" in few
    enough = rate_badge({"success_rate": 0.6, "n_labelled": 40, "success_rate_low": 0.45,
                         "success_rate_high": 0.73}, 0.5, data)
    assert 'class="rate good"' in enough and "60% success" in enough
    assert "95% Wilson interval 45%–73% over 40 labelled queries" in enough
