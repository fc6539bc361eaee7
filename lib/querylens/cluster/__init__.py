"""Normalise -> PCA -> KMeans at scale, with the notebook's diagnostics and saved models."""

from querylens.cluster.fit import ClusterResult, check_embeddings, fit_clusters, score_clusters
from querylens.cluster.model import ClusterModel, Projection, load_model, match_clusters, save_model
from querylens.cluster.silhouette import (
    ClusterStats,
    sampled_silhouette_euclidean,
    silhouette_sqeuclidean,
)

__all__ = [
    "ClusterModel", "ClusterResult", "ClusterStats", "Projection", "check_embeddings",
    "fit_clusters", "load_model", "match_clusters", "sampled_silhouette_euclidean",
    "save_model", "score_clusters", "silhouette_sqeuclidean",
]
