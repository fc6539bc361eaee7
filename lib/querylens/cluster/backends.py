"""Two ways to fit the projection and KMeans: sklearn on the driver, or pyspark.ml."""

from __future__ import annotations

import numpy as np
from pyspark.ml.clustering import KMeans as SparkKMeans
from pyspark.ml.feature import PCA as SparkPCA
from pyspark.ml.feature import Normalizer as SparkNormalizer
from pyspark.ml.functions import array_to_vector
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from querylens.cluster.model import Projection
from querylens.runtime.arrays import normalize_rows
from querylens.runtime.config import ClusterConfig

BACKENDS = ("sklearn", "mllib")


def choose_backend(config: ClusterConfig, n_rows: int) -> str:
    """`config.backend`, or for `auto` sklearn up to `auto_max_rows` rows and mllib above."""
    if config.backend != "auto":
        return config.backend
    return "sklearn" if n_rows <= config.auto_max_rows else "mllib"


def fit_projection_sklearn(X: np.ndarray, seed: int) -> Projection:
    """Normalizer -> PCA with every component (min(n, d)) on driver rows `X`."""
    X = normalize_rows(X, np.float64)
    n_components = min(X.shape)
    solver = "covariance_eigh" if X.shape[0] >= X.shape[1] else "full"
    pca = PCA(n_components=n_components, svd_solver=solver, random_state=seed).fit(X)
    return Projection(pca.mean_, pca.components_, pca.explained_variance_ratio_)


def fit_projection_mllib(embeddings: DataFrame, dim: int, n_rows: int) -> Projection:
    """pyspark.ml Normalizer -> PCA (all components) on `embedding`, plus the mean it centres."""
    vectors = embeddings.select(array_to_vector(F.col("embedding")).alias("raw"))
    normalized = SparkNormalizer(p=2.0, inputCol="raw", outputCol="features").transform(vectors)
    k = min(dim, n_rows)
    model = SparkPCA(k=k, inputCol="features", outputCol="pca").fit(normalized)
    mean = normalized.select(Summarizer.mean(F.col("features")).alias("m")).first()
    assert mean is not None
    components = np.asarray(model.pc.toArray(), dtype=np.float64).T
    ratio = np.asarray(model.explainedVariance.toArray(), dtype=np.float64)
    return Projection(np.asarray(mean.m.toArray(), dtype=np.float64), components, ratio)


def fit_kmeans_sklearn(
    Z: np.ndarray, k: int, n_init: int, max_iter: int, tol: float, seed: int
) -> KMeans:
    """KMeans(k-means++, lloyd) on projected driver rows."""
    return KMeans(n_clusters=k, init="k-means++", n_init=n_init, max_iter=max_iter, tol=tol,
                  random_state=seed).fit(Z)


def fit_kmeans_mllib(
    reduced: DataFrame, k: int, max_iter: int, tol: float, seed: int, init_steps: int
) -> np.ndarray:
    """pyspark.ml KMeans (k-means||) on `reduced` array<double>; the centroids (k x p)."""
    features = reduced.select(array_to_vector(F.col("reduced")).alias("features"))
    model = SparkKMeans(k=k, maxIter=max_iter, tol=tol, seed=seed, initMode="k-means||",
                        initSteps=init_steps, featuresCol="features").fit(features)
    centers = np.asarray(model.clusterCenters(), dtype=np.float64)
    if len(centers) < k:
        raise ValueError(
            f"mllib KMeans found only {len(centers)} distinct centres for "
            f"cluster.n_clusters={k}; lower n_clusters or check for duplicate embeddings"
        )
    return centers
