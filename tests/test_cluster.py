"""Clustering: silhouettes against sklearn, both backends, saved models, stage tables."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.metrics import adjusted_rand_score, silhouette_samples, silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from querylens.cluster import (
    ClusterStats,
    check_embeddings,
    fit_clusters,
    load_model,
    match_clusters,
    sampled_silhouette_euclidean,
    save_model,
    silhouette_sqeuclidean,
)
from querylens.cluster.backends import fit_projection_sklearn
from querylens.cluster.model import apply_ids
from querylens.cluster.naming import STOP_WORDS, ctfidf_scores, term_counts
from querylens.cluster.silhouette import (
    prefix_silhouettes_euclidean,
    spark_cluster_stats,
    with_silhouette,
)
from querylens.cluster.stage import write_clusters, write_scores
from querylens.cluster.sweep import run_sweep, valid_grid
from querylens.runtime.config import Config, ConfigError, load_config
from querylens.runtime.errors import ModelLoadError
from querylens.runtime.runs import Run

N, DIM, K = 400, 32, 4
WORDS = ["dress", "jeans", "sneakers", "handbag"]


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(N, n_features=DIM, centers=K, random_state=0, cluster_std=1.0)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def frames(spark: SparkSession, blobs: tuple[np.ndarray, np.ndarray]) -> tuple[DataFrame, ...]:
    X, y = blobs
    keys = [f"{i:016x}" for i in range(N)]
    emb = spark.createDataFrame(pd.DataFrame({"query_key": keys, "embedding": list(X)}),
                                "query_key string, embedding array<float>")
    queries = spark.createDataFrame(pd.DataFrame({
        "query_key": keys,
        "query": [f"{WORDS[t]} {['red', 'blue', 'black'][i % 3]} size {i % 5}"
                  for i, t in enumerate(y)],
        "n_searches": (np.arange(N) % 17 + 1).astype("int64"),
    }))
    return emb, queries


@pytest.fixture(scope="module")
def cfg(config: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    models = tmp_path_factory.mktemp("models")
    cluster = load_config(None, [
        f"cluster.n_clusters={K}", "cluster.n_components=5", "cluster.backend=sklearn",
        "cluster.sweep_components=[2,5,400]", "cluster.sweep_clusters=[3,4]",
        "cluster.stability_seeds=[7]", f"cluster.model_dir={models}",
    ]).cluster
    return dataclasses.replace(config, cluster=cluster)


def with_cluster(cfg: Config, **changes: object) -> Config:
    return dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, **changes))


def scored_frame(run: Run, table: str) -> pd.DataFrame:
    return (run.spark.table(f"{run.database}.{table}").where(f"run_id = '{run.run_id}'")
            .toPandas())


@pytest.fixture(scope="module")
def fitted(spark: SparkSession, frames: tuple[DataFrame, ...], cfg: Config) -> Run:
    run = Run(spark, cfg, run_id="cluster-fit")
    run.facts["embed"] = {"model_id": "test-model", "model_revision": "r1"}
    run.facts["cluster"] = write_clusters(run, *frames)
    return run


def test_sqeuclidean_silhouette_matches_sklearn_numpy() -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(500, 7))
    labels = rng.integers(0, 5, size=500)
    labels[17] = 5
    ours = silhouette_sqeuclidean(Z, labels, ClusterStats.of(Z, labels, 6))
    ref = silhouette_samples(Z, labels, metric="sqeuclidean")
    assert np.abs(ours - ref).max() < 1e-6
    assert ours[17] == 0.0


def test_sqeuclidean_silhouette_in_spark_matches_sklearn(spark: SparkSession) -> None:
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(600, 6)) + rng.integers(0, 3, size=(600, 1))
    labels = rng.integers(0, 8, size=600)
    df = spark.createDataFrame(
        pd.DataFrame({"query_key": [str(i) for i in range(600)], "reduced": list(Z),
                      "cluster_id": labels.astype("int32")}),
        "query_key string, reduced array<double>, cluster_id int").repartition(3)
    stats = spark_cluster_stats(df, 8, 6)
    out = with_silhouette(df, stats).toPandas()
    out = out.assign(i=out["query_key"].astype(int)).sort_values("i")
    ref = silhouette_samples(Z, labels, metric="sqeuclidean")
    assert np.abs(out["silhouette_sqeuclidean"].to_numpy() - ref).max() < 1e-6


def test_sampled_euclidean_silhouette_is_silhouette_score_on_the_sample() -> None:
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(3000, 5))
    labels = KMeans(6, n_init=1, random_state=0).fit_predict(Z)
    value, idx = sampled_silhouette_euclidean(Z, labels, 700, seed=3)
    assert len(idx) == 700 and len(set(idx)) == 700
    assert value == pytest.approx(silhouette_score(Z[idx], labels[idx]), abs=1e-12)
    assert value != pytest.approx(silhouette_score(Z[:700], labels[:700]), abs=1e-6)


def test_prefix_euclidean_silhouettes_match_silhouette_score() -> None:
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(900, 12)) + rng.integers(0, 4, size=(900, 1)) * rng.normal(size=12)
    labelings = {(p, k): KMeans(k, n_init=1, random_state=0).fit_predict(Z[:, :p])
                 for p in (2, 5, 12) for k in (3, 6)}
    labelings[5, 9] = rng.integers(0, 9, size=900)
    labelings[5, 9][7] = 40
    ours = prefix_silhouettes_euclidean(Z, labelings, chunk_rows=250)
    for (p, k), labels in labelings.items():
        assert ours[p, k] == pytest.approx(silhouette_score(Z[:, :p], labels), abs=1e-10)
    assert np.isnan(prefix_silhouettes_euclidean(Z, {(3, 1): np.zeros(900, int)})[3, 1])


def test_fit_writes_tables_with_exact_silhouettes(fitted: Run) -> None:
    assignments = scored_frame(fitted, "cluster_assignments")
    assert set(assignments.columns) >= {"query_key", "cluster_id", "distance",
                                        "silhouette_sqeuclidean", "next_cluster_id",
                                        "next_distance", "model_version"}
    model = load_model(fitted.config.cluster.model_dir, 1)
    clusters = scored_frame(fitted, "clusters").set_index("cluster_id").sort_index()
    assert clusters["size"].sum() == N and clusters["share"].sum() == pytest.approx(1.0)
    for column in ["top_terms", "label", "central_queries", "top_queries", "next_cluster_id",
                   "mean_silhouette_sqeuclidean", "n_searches"]:
        assert column in clusters.columns
    assert sorted(t[0] for t in clusters["top_terms"]) == sorted(WORDS)
    assert all(label.split(" / ")[0] in WORDS for label in clusters["label"])
    assert (clusters["next_cluster_id"] != clusters.index).all()
    assert model.n_clusters == K and model.n_components == 5


def test_per_query_silhouette_and_sampled_metric_match_sklearn(
    fitted: Run, blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    model = load_model(fitted.config.cluster.model_dir, 1)
    assignments = scored_frame(fitted, "cluster_assignments")
    assignments = assignments.assign(i=assignments["query_key"].apply(int, base=16))
    assignments = assignments.sort_values("i")
    Z = model.transform(blobs[0])
    labels = assignments["cluster_id"].to_numpy()
    assert np.array_equal(labels, model.sq_distances(Z).argmin(1))
    ref = silhouette_samples(Z, labels, metric="sqeuclidean")
    assert np.abs(assignments["silhouette_sqeuclidean"].to_numpy() - ref).max() < 1e-6
    metrics = scored_frame(fitted, "model_metrics").set_index("metric")["value"]
    assert metrics["silhouette_euclidean_sampled"] == pytest.approx(
        silhouette_score(Z, labels), abs=1e-9)
    assert metrics["silhouette_sqeuclidean"] == pytest.approx(ref.mean(), abs=1e-9)
    assert metrics["ari_seed_7"] > 0.95
    sweep = scored_frame(fitted, "cluster_sweep")
    assert sorted(zip(sweep.n_components, sweep.n_clusters, strict=True)) == [
        (2, 3), (2, 4), (5, 3), (5, 4)]
    variance = scored_frame(fitted, "pca_variance").sort_values("component")
    assert len(variance) == DIM
    assert variance["cumulative"].iloc[-1] == pytest.approx(1.0)


def test_backends_agree_on_blobs(
    spark: SparkSession, frames: tuple[DataFrame, ...], cfg: Config, fitted: Run,
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    config = with_cluster(cfg, backend="mllib", sweep=False, stability_seeds=[])
    result = fit_clusters(spark, *frames, config.cluster, model_id="test-model")
    mllib = result.assignments.toPandas().sort_values("query_key")
    result.unpersist()
    sk = scored_frame(fitted, "cluster_assignments").sort_values("query_key")
    assert result.facts["backend"] == "mllib"
    assert adjusted_rand_score(sk["cluster_id"], mllib["cluster_id"]) > 0.95
    assert adjusted_rand_score(blobs[1], mllib["cluster_id"]) > 0.95


def test_scoring_with_saved_model_reproduces_fit(
    spark: SparkSession, frames: tuple[DataFrame, ...], fitted: Run,
) -> None:
    version = fitted.facts["cluster"]["model_version"]
    run = Run(spark, with_cluster(fitted.config, score_version=version), run_id="cluster-score")
    run.facts["embed"] = {"model_id": "test-model", "model_revision": "r1"}
    facts = write_scores(run, *frames)
    assert facts["model_version"] == version
    fit = scored_frame(fitted, "cluster_assignments").set_index("query_key").sort_index()
    scored = scored_frame(run, "cluster_assignments").set_index("query_key").sort_index()
    assert (scored["cluster_id"] == fit["cluster_id"]).all()
    assert np.allclose(scored["distance"], fit["distance"], atol=1e-9)
    assert (scored["model_version"] == version).all()


def test_refit_keeps_cluster_ids_of_previous_version(
    spark: SparkSession, frames: tuple[DataFrame, ...], fitted: Run, tmp_path: Path,
) -> None:
    version = fitted.facts["cluster"]["model_version"]
    models = shutil.copytree(str(fitted.config.cluster.model_dir), tmp_path / "models")
    config = with_cluster(fitted.config, seed=5, sweep=False, stability_seeds=[],
                          model_dir=str(models))
    run = Run(spark, config, run_id="cluster-refit")
    run.facts["embed"] = {"model_id": "test-model", "model_revision": "r1"}
    facts = write_clusters(run, *frames)
    assert facts["model_version"] == version + 1
    assert facts["id_mapping"]["previous_version"] == version
    saved = load_model(models, version + 1)
    assert saved.meta["new_to_previous"] == facts["id_mapping"]["new_to_previous"]
    first = scored_frame(fitted, "cluster_assignments").set_index("query_key").sort_index()
    second = scored_frame(run, "cluster_assignments").set_index("query_key").sort_index()
    assert (first["cluster_id"] == second["cluster_id"]).all()


def test_match_clusters_undoes_a_permutation(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    model = load_model_from_blobs(blobs)
    perm = np.array([2, 0, 3, 1])
    shuffled = model.relabel(perm)
    ids = match_clusters(shuffled, model)
    assert ids.tolist() == perm.tolist()
    assert np.array_equal(apply_ids(shuffled, ids).centroids_, model.centroids_)


def load_model_from_blobs(blobs: tuple[np.ndarray, np.ndarray]):  # type: ignore[no-untyped-def]
    from querylens.cluster.model import ClusterModel

    projection = fit_projection_sklearn(blobs[0], 0)
    Z = projection.transform(blobs[0], 5)
    return ClusterModel(projection, KMeans(K, n_init=3, random_state=0).fit(Z).cluster_centers_)


def test_save_and_load_round_trip(tmp_path: Path, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    model = load_model_from_blobs(blobs)
    saved = save_model(model, tmp_path, {"run_id": "x"})
    loaded = load_model(tmp_path)
    assert saved.version == loaded.version == 1
    assert np.array_equal(loaded.predict(blobs[0]), model.predict(blobs[0]))
    with pytest.raises(ModelLoadError, match="version 9 not found"):
        load_model(tmp_path, 9)


def test_sweep_slices_pca_like_the_notebook_refit(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    X = blobs[0]
    projection = fit_projection_sklearn(X, 42)
    sweep = run_sweep(X, projection, [2, 5, 10], [3, 4], n_init=4, max_iter=300, tol=1e-4,
                      seed=42, silhouette_sample_size=10_000)
    for row in sweep.itertuples():
        process = make_pipeline(Normalizer(), PCA(row.n_components, random_state=42))
        Z = process.fit_transform(X)
        km = KMeans(row.n_clusters, n_init=4, random_state=42).fit(Z)
        assert row.silhouette_euclidean_sampled == pytest.approx(
            silhouette_score(Z, km.labels_), abs=1e-6)
        assert row.inertia == pytest.approx(km.inertia_, rel=1e-6)
        assert row.explained_variance == pytest.approx(
            process[-1].explained_variance_ratio_.sum(), abs=1e-9)


def test_ctfidf_matches_reference(spark: SparkSession) -> None:
    queries = ["red dress", "blue dress long", "red jeans", "jeans slim", "black jeans",
               "white sneakers", "sneakers running", "red sneakers", "bag leather", "bag red"]
    labels = [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    df = spark.createDataFrame(pd.DataFrame({"query_key": [str(i) for i in range(10)],
                                             "query": queries, "cluster_id": labels}))
    ours = ctfidf_scores(term_counts(df).toPandas())
    vec = CountVectorizer(binary=True, ngram_range=(1, 2), stop_words=sorted(STOP_WORDS))
    counts = vec.fit_transform(queries).toarray()
    X = np.vstack([counts[np.array(labels) == c].sum(0) for c in range(4)]).astype(float)
    score = X / X.sum(1, keepdims=True) * np.log(1 + X.sum(1).mean() / X.sum(0))
    terms = vec.get_feature_names_out()
    table = ours.pivot(index="cluster_id", columns="term", values="score")
    assert sorted(table.columns) == sorted(terms)
    np.testing.assert_allclose(table.loc[range(4), terms].fillna(0).to_numpy(), score,
                               rtol=1e-12)


def test_bad_embeddings_are_rejected_with_counts(spark: SparkSession) -> None:
    rows = [("a", [1.0, 0.0]), ("b", [0.0, 1.0]), ("c", [float("nan"), 1.0]),
            ("d", [float("inf"), 0.0]), ("e", [1.0, 1.0])]
    df = spark.createDataFrame(rows, "query_key string, embedding array<float>")
    with pytest.raises(ValueError, match="2 embeddings with NaN, inf or null values for m1"):
        check_embeddings(df, "m1")
    kept, stats = check_embeddings(df, "m1", "drop")
    assert kept.count() == 3 and stats.rejected_nonfinite == 2 and stats.dim == 2
    mixed = spark.createDataFrame([("a", [1.0, 0.0]), ("b", [1.0, 0.0, 2.0]),
                                   ("c", [1.0, 2.0, 3.0])],
                                  "query_key string, embedding array<float>")
    with pytest.raises(ValueError, match="mixed dimension for m2: 1 rows of dim 2, 2 rows of"):
        check_embeddings(mixed, "m2")
    one = spark.createDataFrame([("a", [1.0, 0.0])], "query_key string, embedding array<float>")
    with pytest.raises(ValueError, match="at least 2 queries"):
        check_embeddings(one, "m3")


def test_sizes_and_grids_are_checked(
    spark: SparkSession, frames: tuple[DataFrame, ...], cfg: Config,
) -> None:
    with pytest.raises(ValueError, match="n_clusters=401 is larger than the 400 distinct"):
        fit_clusters(spark, *frames, with_cluster(cfg, n_clusters=401).cluster)
    with pytest.raises(ValueError, match="n_components=33 is larger than the embedding dim"):
        fit_clusters(spark, *frames, with_cluster(cfg, n_components=33).cluster)
    with pytest.raises(ValueError, match="no valid point in the sweep grid"):
        valid_grid([64, 128], [10], dim=32, n_rows=400)
    with pytest.raises(ConfigError, match="cluster.sweep_components"):
        load_config(None, ["cluster.sweep_components=[]"])
    with pytest.raises(ConfigError, match="cluster.sweep_clusters values must be >= 2"):
        load_config(None, ["cluster.sweep_clusters=[1, 5]"])


def test_silhouette_samples_table_is_sklearns_on_the_seeded_sample(
    fitted: Run, blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    model = load_model(fitted.config.cluster.model_dir, 1)
    sample = scored_frame(fitted, "silhouette_samples")
    assert len(sample) == min(N, fitted.config.cluster.silhouette_sample_size)
    rows = sample["query_key"].apply(int, base=16).to_numpy()
    Z = model.transform(blobs[0][rows])
    labels = sample["cluster_id"].to_numpy()
    assert np.array_equal(labels, model.sq_distances(Z).argmin(1))
    assert np.abs(sample["silhouette"].to_numpy() - silhouette_samples(Z, labels)).max() < 1e-9
    assert (sample["next_cluster_id"] != sample["cluster_id"]).all()
    assert (sample["model_version"] == 1).all()
    clusters = scored_frame(fitted, "clusters")
    assert clusters["stability"].between(0.9, 1.0).all()
    assert clusters["trusted"].all() and not clusters["catch_all"].any()
    assert fitted.facts["cluster"]["n_trusted"] == K
