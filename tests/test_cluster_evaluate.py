"""External validation of clusterings: AMI, NMI, ARI against sklearn, purity and inverse
purity by hand, the sweep's columns, and reference labels matched by normalised text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from querylens.cluster.backends import fit_projection_sklearn
from querylens.cluster.evaluate import (
    external_metrics,
    external_scores,
    inverse_purity,
    purity,
    reference_labels,
    scores_from_counts,
)
from querylens.cluster.sweep import run_sweep
from querylens.runtime.config import Config, EvaluateConfig
from querylens.runtime.errors import DataError

# 10 rows, clusters a/b/c against classes x/y/z:
#   a: x x y      b: y y y z      c: z x x
CLASSES = np.array(["x", "x", "y", "y", "y", "y", "z", "z", "x", "x"])
CLUSTERS = np.array(["a", "a", "a", "b", "b", "b", "b", "c", "c", "c"])


def test_purity_and_inverse_purity_by_hand() -> None:
    # Purity: a's majority x (2) + b's y (3) + c's x (2) = 7 of 10.
    assert purity(CLASSES, CLUSTERS) == pytest.approx(0.7)
    # Inverse purity: x's largest cluster a or c (2) + y's b (3) + z's b or c (1) = 6 of 10.
    assert inverse_purity(CLASSES, CLUSTERS) == pytest.approx(0.6)
    assert purity(CLASSES, CLASSES) == inverse_purity(CLASSES, CLASSES) == 1.0


def test_external_scores_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 6, 500)
    clusters = np.where(rng.random(500) < 0.7, classes, rng.integers(0, 8, 500))
    scores = external_scores(classes, clusters)
    assert scores["ami"] == pytest.approx(adjusted_mutual_info_score(classes, clusters))
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(classes, clusters))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(classes, clusters))
    table = pd.crosstab(clusters, classes).to_numpy()
    assert scores["purity"] == pytest.approx(table.max(1).sum() / 500)
    assert scores["inverse_purity"] == pytest.approx(table.max(0).sum() / 500)


def test_scores_from_a_contingency_table_equal_scores_of_the_rows() -> None:
    counts = (pd.DataFrame({"cluster_id": CLUSTERS, "class": CLASSES})
              .groupby(["cluster_id", "class"]).size().rename("n").reset_index())
    from_counts = scores_from_counts(counts)
    direct = external_scores(CLASSES, CLUSTERS)
    assert {k: from_counts[k] for k in direct} == pytest.approx(direct)
    assert from_counts["labelled_rows"] == 10 and from_counts["label_classes"] == 3


def test_sweep_points_carry_external_scores_on_labelled_rows() -> None:
    X, y = make_blobs(300, n_features=16, centers=4, random_state=1)
    classes = np.array([f"class {t}" for t in y], dtype=object)
    classes[::7] = None
    projection = fit_projection_sklearn(X, 42)
    sweep = run_sweep(X, projection, [2, 5], [3, 4], n_init=4, max_iter=300, tol=1e-4, seed=42,
                      silhouette_sample_size=300, classes=classes)
    known = np.array([c is not None for c in classes])
    for row in sweep.itertuples():
        Z = make_pipeline(Normalizer(), PCA(row.n_components, random_state=42)).fit_transform(X)
        labels = KMeans(row.n_clusters, n_init=4, random_state=42).fit(Z).labels_
        assert row.labelled_rows == known.sum()
        assert row.ami == pytest.approx(
            adjusted_mutual_info_score(classes[known].astype(str), labels[known]), abs=1e-9)
        assert row.purity == pytest.approx(purity(classes[known].astype(str), labels[known]))
    bare = run_sweep(X, projection, [2], [3], n_init=1, max_iter=300, tol=1e-4, seed=42,
                     silhouette_sample_size=300)
    assert bare["ami"].isna().all() and (bare["labelled_rows"] == 0).all()


def test_reference_labels_from_csv_match_by_normalised_text(
    spark: SparkSession, config: Config, tmp_path: Path
) -> None:
    from querylens.ingest.normalize import with_normalized_query

    path = tmp_path / "labels.csv"
    path.write_text('query,category\n"  Red  DRESS",dresses\nred dress,dresses\n'
                    'red dress,shoes\n"Blue Jeans, slim",jeans\nunknown thing,\n',
                    encoding="utf-8")
    cfg = dataclasses.replace(config, evaluate=EvaluateConfig(str(path), class_column="category"))
    labels, source = reference_labels(spark, cfg)
    assert labels is not None and source == str(path)
    queries = with_normalized_query(spark.createDataFrame(pd.DataFrame(
        {"query": ["red dress", "blue jeans, slim", "green hat"]})), [], config.normalize)
    by_query = {r["query_norm"]: r["query_key"] for r in queries.collect()}
    found = {r["query_key"]: r["class"] for r in labels.collect()}
    assert found == {by_query["red dress"]: "dresses", by_query["blue jeans, slim"]: "jeans"}
    assigned = queries.select("query_key", F.lit(0).alias("cluster_id"))
    metrics = external_metrics(assigned, labels)
    assert metrics["labelled_rows"] == 2 and metrics["label_coverage"] == pytest.approx(2 / 3)
    assert metrics["purity"] == 0.5 and metrics["inverse_purity"] == 1.0

    bad = dataclasses.replace(config, evaluate=EvaluateConfig(str(path)))
    with pytest.raises(DataError, match="no column 'class'"):
        reference_labels(spark, bad)
    none, why = reference_labels(spark, config)
    assert none is None and "no evaluate.labels" in why
