import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession

from querylens.recommend.stage import recommend_stage
from querylens.runtime.arrays import with_matrix
from querylens.runtime.runs import Run
from querylens.runtime.tables import read_run_table
from querylens.success.evaluate import evaluate_recommendations
from querylens.success.stage import success_stage
from tests.helpers import make_config, plant_embeddings, write_fixture

COUNT_COLUMNS = ["n_searches", "n_sessions", "clicks", "add_to_bags", "purchases",
                 "searches_with_click", "searches_with_add_to_bag", "searches_with_purchase"]


def planted_run(spark: SparkSession, root: Path, database: str, interactions: bool,
                truth: bool) -> tuple[Run, DataFrame, pd.DataFrame]:
    """400 queries in 4 clusters; P(click) rises along one embedding direction."""
    rng = np.random.default_rng(0)
    n, d = 400, 16
    cluster = np.arange(n) % 4
    centers = np.eye(d)[:4] * 3
    emb = centers[cluster] + rng.normal(size=(n, d))
    p = 1 / (1 + np.exp(-2.5 * emb[:, 5] - 0.8 * (cluster == 1) + 0.8 * (cluster == 3)))
    searches = rng.integers(2, 60, n)
    clicks = rng.binomial(searches, p) if interactions else np.zeros(n, dtype=int)
    keys = [f"k{i:03d}" for i in range(n)]
    frame = pd.DataFrame({"query_key": keys, "query": [f"query {i}" for i in range(n)],
                          "n_searches": searches, "n_sessions": searches, "clicks": clicks,
                          "add_to_bags": clicks // 3, "purchases": clicks // 6,
                          "searches_with_click": clicks, "searches_with_add_to_bag": clicks // 3,
                          "searches_with_purchase": clicks // 6})
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    config = make_config(root, f"run.database={database}", "success.backend=driver",
                         "success.hidden_sizes=[16]", "success.max_epochs=60",
                         "success.learning_rate=0.01", "recommend.min_similarity=0.0",
                         "recommend.predicted_fail_below=0.3")
    run = Run(spark, config, run_id=f"{database}-run")
    write_fixture(run, "queries", frame)
    assignments = pd.DataFrame({"query_key": keys, "cluster_id": cluster.astype("int32"),
                                "distance": 0.0, "silhouette_sqeuclidean": 0.0,
                                "next_cluster_id": ((cluster + 1) % 4).astype("int32")})
    write_fixture(run, "cluster_assignments", assignments)
    write_fixture(run, "clusters", spark.createDataFrame(
        [(c, int((cluster == c).sum()), f"theme {c}") for c in range(4)],
        "cluster_id int, size long, label string"))
    if truth:
        gt = pd.DataFrame({"query_key": keys + keys[:10], "query": "q", "template_id": 0,
                           "kind": "k", "true_category": [f"cat{c}" for c in cluster]
                           + ["cat0"] * 10, "true_brand": None,
                           "p_success": np.concatenate([p, p[:10]])})
        spark.createDataFrame(gt, "query_key string, query string, template_id long, "
                              "kind string, true_category string, true_brand string, "
                              "p_success double").write.mode("overwrite").saveAsTable(
            f"{database}.demo_ground_truth")
    embeddings = plant_embeddings(run, keys, emb)
    return run, embeddings, frame


def metrics_of(run: Run) -> dict[tuple[str, str, str], float]:
    rows = read_run_table(run.spark, run.database, "model_metrics", run.run_id).collect()
    return {(r["model"], r["split"], r["metric"]): r["value"] for r in rows}


def test_success_and_recommend_stages_end_to_end(spark: SparkSession, spark_root: Path) -> None:
    run, embeddings, frame = planted_run(spark, spark_root, "ql_success", True, truth=True)
    run.write_metrics([("kmeans", "all", "stability_ari", 0.9)])
    success_stage(run)
    recommend_stage(run)
    clusters = read_run_table(spark, run.database, "clusters_with_success",
                              run.run_id).toPandas()
    rates = read_run_table(spark, run.database, "cluster_success", run.run_id).toPandas()
    merged = clusters.merge(rates, on="cluster_id", suffixes=("", "_expected"))
    assert len(merged) == 4 and merged["label"].tolist() == [f"theme {c}" for c in
                                                             merged["cluster_id"]]
    np.testing.assert_allclose(merged["success_rate"], merged["success_rate_expected"])
    labels = read_run_table(spark, run.database, "success_labels", run.run_id).toPandas()
    by_hand = labels.dropna(subset=["success"]).groupby("cluster_id")["success"].mean()
    np.testing.assert_allclose(merged.set_index("cluster_id")["success_rate"].sort_index(),
                               by_hand.astype(float).sort_index())
    got = metrics_of(run)
    assert got[("kmeans", "all", "stability_ari")] == 0.9
    for model in ("nn", "logistic_regression", "cluster_rate", "majority"):
        for metric in ("roc_auc", "pr_auc", "brier", "ece"):
            assert math.isfinite(got[(model, "test", metric)])
    assert got[("majority", "test", "roc_auc")] == 0.5
    assert got[("nn", "test", "roc_auc")] > 0.75
    assert got[("nn", "test", "roc_auc")] > got[("cluster_rate", "test", "roc_auc")]
    assert got[("labels", "demo_truth", "spearman_true_p")] > 0.5
    assert 0.0 <= got[("recommendations", "demo_truth", "same_category_share")] <= 1.0
    assert got[("recommendations", "demo_truth", "true_p_ratio")] > 1.0
    labels = read_run_table(spark, run.database, "success_labels", run.run_id).toPandas()
    preds = read_run_table(spark, run.database, "success_predictions", run.run_id).toPandas()
    assert len(labels) == len(preds) == len(frame)
    assert preds["p_success"].between(0, 1).all()
    assert set(labels.loc[labels["support"] < 5, "success"].isna()) == {True}
    recs = read_run_table(spark, run.database, "recommendations", run.run_id).toPandas()
    served = recs[recs["rec_query_key"].notna()]
    assert len(served) > 0
    merged = labels.merge(preds[["query_key", "p_success"]], on="query_key")
    ok = merged[(merged["success"] == True) & (merged["support"] >= 10)]  # noqa: E712
    assert set(served["rec_query_key"]) <= set(ok["query_key"])
    failing = merged[(merged["success"] == False)  # noqa: E712
                     | (merged["success"].isna() & (merged["p_success"] < 0.3))]
    assert set(recs["query_key"]) == set(failing["query_key"])
    facts = run.facts["success"]
    assert facts["backend"] == "driver" and facts["model"].startswith("mlp-")
    assert (Path(facts["model_path"]) / "model.pt").is_file()
    rates = read_run_table(spark, run.database, "cluster_success", run.run_id).toPandas()
    expected = labels.dropna(subset=["success"]).groupby("cluster_id")["success"].mean()
    np.testing.assert_allclose(rates.set_index("cluster_id")["success_rate"].sort_index(),
                               expected.astype(float).sort_index())


def test_no_interactions_skip_the_model_and_explain_empty_recommendations(
    spark: SparkSession, spark_root: Path
) -> None:
    run, embeddings, _ = planted_run(spark, spark_root, "ql_success_zero", False, truth=False)
    success_stage(run)
    recommend_stage(run)
    assert run.facts["success"]["model"].startswith("skipped: no interactions at all")
    notes = " ".join(run.facts["recommend"]["notes"])
    assert "no successful cluster" in notes and "no success_predictions" in notes
    assert read_run_table(spark, run.database, "recommendations", run.run_id).count() == 0
    got = metrics_of(run)
    assert got[("labels", "all", "successful")] == 0
    assert got[("recommendations", "all", "failing_queries")] > 0
    assert all(math.isfinite(v) for v in got.values())


def test_write_metrics_refuses_nan(spark: SparkSession, spark_root: Path) -> None:
    config = make_config(spark_root)
    with pytest.raises(ValueError, match="m/test/auc is nan"):
        Run(spark, config, run_id="nan-check").write_metrics([("m", "test", "auc", float("nan"))])


def test_recommendation_evaluation_matches_hand_count(spark: SparkSession) -> None:
    recs = spark.createDataFrame([
        ("a", 1, "x", 1), ("a", 1, "y", 2), ("b", 2, "x", 1), ("b", 2, None, None),
        ("c", 3, "z", 3),
    ], "query_key string, cluster_id int, rec_query_key string, rec_cluster_id int")
    truth = spark.createDataFrame([
        ("a", 0.2, "dresses"), ("b", 0.4, "bags"), ("c", 0.1, None),
        ("x", 0.8, "dresses"), ("y", 0.6, "bags"), ("z", 0.5, "bags"),
    ], "query_key string, true_p double, true_category string")
    rows, notes = evaluate_recommendations(recs, truth)
    got = {metric: value for _, _, metric, value in rows}
    assert notes == []
    assert got["pairs"] == 4 and got["pairs_with_category"] == 3
    assert got["same_category_share"] == pytest.approx(1 / 3)
    assert got["pairs_own_cluster"] == 1 and got["same_category_share_own_cluster"] == 1.0
    assert got["pairs_other_cluster"] == 2 and got["same_category_share_other_cluster"] == 0.0
    assert got["failing_true_p"] == pytest.approx((0.2 + 0.4 + 0.1) / 3)
    assert got["recommended_true_p"] == pytest.approx((0.7 + 0.8 + 0.5) / 3)
    assert got["true_p_ratio"] == pytest.approx(2.0 / 0.7)


def test_with_matrix_collects_arrays_as_one_float32_matrix(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 7)).astype(np.float32)
    df = spark.createDataFrame([(f"k{i}", i % 3, v.tolist()) for i, v in enumerate(vectors)],
                               "query_key string, cluster_id int, embedding array<float>")
    frame, matrix = with_matrix(df.repartition(4), "embedding")
    order = np.argsort(frame["query_key"].map(lambda k: int(k[1:])).to_numpy())
    assert list(frame.columns) == ["query_key", "cluster_id"]
    assert matrix.dtype == np.float32 and matrix.shape == (50, 7)
    np.testing.assert_array_equal(matrix[order], vectors)
    assert with_matrix(df.limit(0), "embedding")[1].shape == (0, 0)


@pytest.mark.parametrize("rows", [[("a", [1.0, 2.0]), ("b", [1.0])], [("a", [1.0]), ("b", None)]])
def test_with_matrix_names_the_bad_column(spark: SparkSession, rows: list) -> None:
    df = spark.createDataFrame(rows, "query_key string, embedding array<float>")
    with pytest.raises(ValueError, match="column embedding holds"):
        with_matrix(df, "embedding")
