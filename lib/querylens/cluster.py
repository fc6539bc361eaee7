"""Normalise -> PCA -> KMeans on the driver with scikit-learn (the notebook's pipeline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_samples
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from querylens.config import ClusterConfig


def fit_pipeline(vectors: np.ndarray, config: ClusterConfig) -> Pipeline:
    """Fit Normalizer -> PCA -> KMeans(k-means++) with the configured seed."""
    n_components = min(config.n_components, vectors.shape[1], vectors.shape[0])
    if vectors.shape[0] < config.n_clusters:
        raise ValueError(
            f"cluster.n_clusters={config.n_clusters} exceeds the {vectors.shape[0]} queries"
        )
    pipe = Pipeline([
        ("normalizer", Normalizer()),
        ("pca", PCA(n_components=n_components, random_state=config.seed)),
        ("kmeans", KMeans(n_clusters=config.n_clusters, init="k-means++", n_init=config.n_init,
                          max_iter=config.max_iter, random_state=config.seed)),
    ])
    return pipe.fit(vectors)


def cluster_queries(
    spark: SparkSession, embeddings: DataFrame, queries: DataFrame, config: ClusterConfig
) -> tuple[DataFrame, DataFrame]:
    """`cluster_assignments` and `clusters` DataFrames for the embedded queries."""
    rows = (
        embeddings.join(queries.select("query_key", "query", "n_searches"), "query_key")
        .orderBy("query_key")
        .toPandas()
    )
    vectors = np.vstack(rows["embedding"].to_numpy()).astype(np.float64)
    pipe = fit_pipeline(vectors, config)
    reduced = pipe[:-1].transform(vectors)
    distances = pipe["kmeans"].transform(reduced)
    labels = pipe["kmeans"].labels_
    ranked = np.argsort(distances, axis=1)
    silhouette = silhouette_samples(reduced, labels, metric="sqeuclidean")
    assignments = pd.DataFrame({
        "query_key": rows["query_key"],
        "cluster_id": labels.astype("int32"),
        "distance": distances[np.arange(len(labels)), labels],
        "silhouette_sqeuclidean": silhouette,
        "next_cluster_id": ranked[:, 1].astype("int32"),
    })
    clusters = summarize_clusters(rows, assignments, config.n_exemplars)
    return spark.createDataFrame(assignments), spark.createDataFrame(clusters)


def summarize_clusters(rows: pd.DataFrame, assignments: pd.DataFrame, n: int) -> pd.DataFrame:
    """Size, share, mean silhouette, exemplars (nearest centroid, most searched) per cluster."""
    frame = assignments.assign(query=rows["query"].to_numpy(),
                               n_searches=rows["n_searches"].to_numpy())
    records = []
    for cluster_id, group in frame.groupby("cluster_id"):
        records.append({
            "cluster_id": int(cluster_id),
            "size": len(group),
            "share": len(group) / len(frame),
            "n_searches": int(group["n_searches"].sum()),
            "mean_silhouette_sqeuclidean": float(group["silhouette_sqeuclidean"].mean()),
            "central_queries": group.nsmallest(n, "distance")["query"].tolist(),
            "top_queries": group.nlargest(n, "n_searches")["query"].tolist(),
            "next_cluster_id": int(group["next_cluster_id"].mode().iloc[0]),
        })
    return pd.DataFrame.from_records(records)
