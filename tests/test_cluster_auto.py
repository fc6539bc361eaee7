"""`auto` n_components / n_clusters and the two-axis sweep, against planted data and sklearn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from querylens.cluster.backends import fit_projection_sklearn
from querylens.cluster.select import choose, choose_clusters, choose_components
from querylens.cluster.stage import write_clusters
from querylens.cluster.sweep import clusters_grid, components_grid, run_sweep
from querylens.runtime.config import Config, load_config
from querylens.runtime.runs import Run

PLANTED_DIM, PLANTED_K, AMBIENT, ROWS = 10, 12, 64, 600


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`PLANTED_K` tight blobs whose centres spread evenly over a `PLANTED_DIM`-d subspace of
    R^`AMBIENT` (offset from the origin, so the normaliser keeps them apart), plus isotropic
    noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(AMBIENT, PLANTED_DIM)))[0].T
    spread = rng.normal(size=(PLANTED_K, PLANTED_DIM))
    centres = np.linalg.qr(spread - spread.mean(0))[0] @ basis
    y = np.arange(ROWS) % PLANTED_K
    offset = 8.0 * np.linalg.qr(rng.normal(size=(AMBIENT, 1)))[0].ravel()
    X = offset + 3.0 * centres[y] + rng.normal(scale=0.04, size=(ROWS, AMBIENT))
    return X, y


def sweep_of(X: np.ndarray, y: np.ndarray | None, components: list[int], clusters: list[int],
             **options: int) -> pd.DataFrame:
    projection = fit_projection_sklearn(X, 42)
    return run_sweep(X, projection, components, clusters, n_init=3, max_iter=300, tol=1e-4,
                     seed=42, silhouette_sample_size=len(X),
                     classes=None if y is None else y.astype(str).astype(object), **options)


def test_auto_finds_the_planted_dimension_and_clusters() -> None:
    """The planted directions carry ~98.9% of the variance, ~9.9% each, so a target of 0.95
    keeps exactly them (the default 0.9 would keep 9: `test_components_rule_by_hand`)."""
    X, y = planted()
    config = dataclasses.replace(load_config().cluster, auto_variance_target=0.95)
    projection = fit_projection_sklearn(X, 42)
    cumulative = np.cumsum(projection.explained_variance_ratio_)
    grid = components_grid("auto", len(cumulative), 5)
    assert grid == [5, 10, 40, 64]
    sweep = sweep_of(X, y, grid, [4, 6, 9, 12, 18, 24])
    choice = choose(config, cumulative, sweep)
    assert (choice.n_components, choice.n_clusters) == (PLANTED_DIM, PLANTED_K), choice.reason
    assert "95%" in choice.reason and "silhouette" in choice.reason
    hit = sweep[(sweep.n_components == PLANTED_DIM) & (sweep.n_clusters == PLANTED_K)].iloc[0]
    assert hit.ami > 0.99 and hit.stability_ari > 0.99


def test_components_rule_by_hand() -> None:
    cumulative = np.array([0.5, 0.7, 0.79, 0.8, 0.95, 1.0 - 1e-9])
    assert choose_components(cumulative, 0.8)[0] == 4
    assert choose_components(cumulative, 0.5)[0] == 1
    assert choose_components(cumulative, 0.9)[0] == 5
    assert choose_components(cumulative, 1.0)[0] == 6
    assert "(80.0%)" in choose_components(cumulative, 0.8)[1]


def test_clusters_rule_prefers_stable_then_silhouette() -> None:
    rows = pd.DataFrame({
        "n_components": [10, 10, 10, 10, 20],
        "n_clusters": [4, 8, 16, 32, 8],
        "silhouette_euclidean_sampled": [0.30, 0.25, 0.40, 0.20, 0.9],
        "silhouette_sqeuclidean": [0.0] * 5,
        "stability_ari": [0.9, 0.8, 0.3, 0.95, 1.0],
    })
    assert choose_clusters(rows, 10, 0.5)[0] == 4
    assert choose_clusters(rows, 10, 0.2)[0] == 16
    k, why = choose_clusters(rows, 10, 0.99)
    assert k == 32 and "most stable" in why
    with pytest.raises(ValueError, match="no point with n_components=40"):
        choose_clusters(rows, 40, 0.5)


def test_grids_scale_with_the_queries_and_include_the_full_dimension() -> None:
    assert components_grid("auto", 384) == [10, 40, 160, 384]
    assert components_grid("auto", 384, extra=116) == [10, 40, 116, 160, 384]
    assert components_grid([5, 10], 384, extra=30) == [5, 10, 30]
    assert clusters_grid("auto", 240, 4, 100, 6) == [4, 6, 9, 14, 21, 31]
    assert clusters_grid("auto", 240, 4, 100, 4) == [4, 8, 16, 31]
    assert clusters_grid("auto", 1_000_000, 4, 100, 6) == [12, 18, 28, 43, 65, 100]
    assert clusters_grid([20, 10, 20], 10**6, 4, 100, 6) == [10, 20]


def purity_by_hand(classes: np.ndarray, clusters: np.ndarray) -> float:
    return sum(np.unique(classes[clusters == c], return_counts=True)[1].max()
               for c in np.unique(clusters)) / len(classes)


def test_sweep_row_equals_sklearn_on_the_same_sample() -> None:
    X, y = planted(1)
    X = X + np.random.default_rng(3).normal(scale=0.6, size=X.shape)
    p, k, stable_rows = PLANTED_DIM, 9, 200
    sweep = sweep_of(X, y, [p, 20], [k], stability_sample_size=stable_rows)
    row = sweep[(sweep.n_components == p) & (sweep.n_clusters == k)].iloc[0]
    Z = make_pipeline(Normalizer(), PCA(p, svd_solver="covariance_eigh")).fit_transform(X)
    labels = KMeans(k, n_init=50, random_state=42).fit(Z).labels_
    refit = KMeans(k, n_init=50, random_state=43).fit(Z[:stable_rows]).labels_
    truth = y.astype(str)
    assert row.ami == pytest.approx(adjusted_mutual_info_score(truth, labels), abs=1e-9)
    assert row.nmi == pytest.approx(normalized_mutual_info_score(truth, labels), abs=1e-9)
    assert row.ari == pytest.approx(adjusted_rand_score(truth, labels), abs=1e-9)
    assert row.purity == pytest.approx(purity_by_hand(truth, labels))
    assert row.inverse_purity == pytest.approx(purity_by_hand(labels, truth))
    assert row.silhouette_euclidean_sampled == pytest.approx(silhouette_score(Z, labels), abs=1e-9)
    assert row.stability_ari == pytest.approx(
        adjusted_rand_score(labels[:stable_rows], refit), abs=1e-9)
    variance = PCA(random_state=42).fit(Normalizer().fit_transform(X)).explained_variance_ratio_
    assert row.explained_variance == pytest.approx(variance[:p].sum(), abs=1e-9)
    assert 0.0 < row.ami < 1.0 and row.labelled_rows == len(X) and not sweep["chosen"].any()


def test_stage_chooses_logs_and_marks_the_point(
    spark: SparkSession, config: Config, tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    X, y = planted(2)
    keys = [f"{i:016x}" for i in range(ROWS)]
    emb = spark.createDataFrame(pd.DataFrame({"query_key": keys, "embedding": list(X)}),
                                "query_key string, embedding array<double>")
    queries = spark.createDataFrame(pd.DataFrame({
        "query_key": keys, "query": [f"item{t} thing" for t in y],
        "n_searches": np.ones(ROWS, dtype="int64")}))
    cluster = load_config(None, [
        "cluster.backend=sklearn", "cluster.sweep_clusters=[6,12,24]", "cluster.stability_seeds=[]",
        "cluster.auto_variance_target=0.95",
        "cluster.stability_bootstraps=0", f"cluster.model_dir={tmp_path_factory.mktemp('m')}",
    ]).cluster
    run = Run(spark, dataclasses.replace(config, cluster=cluster), run_id="cluster-auto")
    run.facts["embed"] = {"model_id": "planted"}
    with caplog.at_level("INFO", logger="querylens"):
        facts = write_clusters(run, emb, queries)
    assert (facts["n_components"], facts["n_clusters"]) == (PLANTED_DIM, PLANTED_K)
    assert any("cluster choice: n_components=10" in r.getMessage() for r in caplog.records)
    sweep = pd.DataFrame(spark.table(f"{run.database}.cluster_sweep").where(
        "run_id = 'cluster-auto'").toPandas())
    chosen = sweep[sweep["chosen"]]
    assert chosen[["n_components", "n_clusters"]].values.tolist() == [[PLANTED_DIM, PLANTED_K]]
    assert sorted(sweep["n_components"].unique()) == [10, 40, 64]
    metrics = pd.DataFrame(spark.table(f"{run.database}.model_metrics").where(
        "run_id = 'cluster-auto' AND split = 'choice'").toPandas())
    values = dict(zip(metrics["metric"], metrics["value"], strict=True))
    assert values["n_components"] == PLANTED_DIM and values["n_clusters_auto"] == 1.0
