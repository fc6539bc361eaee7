"""Small computations on samples that the report needs but no table stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_samples

from querylens.runtime.arrays import normalize_rows, stack_rows


def reduce_sample(embeddings: pd.DataFrame, n_components: int, seed: int) -> np.ndarray:
    """L2-normalise the sampled embeddings and project them on `n_components` PCA axes."""
    vectors = normalize_rows(stack_rows(embeddings["embedding"], np.float64))
    n = max(1, min(n_components, vectors.shape[0], vectors.shape[1]))
    return PCA(n_components=n, random_state=seed).fit_transform(vectors)


def refit_silhouettes(
    reduced: np.ndarray, n_clusters: int, seed: int, n_init: int = 3
) -> pd.DataFrame:
    """Per-point squared-euclidean silhouettes of a KMeans with `n_clusters` on `reduced`."""
    labels = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(reduced)
    values = silhouette_samples(reduced, labels, metric="sqeuclidean")
    return pd.DataFrame({"cluster_id": labels, "silhouette_sqeuclidean": values})


def neighbour_ks(chosen: int, grid: list[int], n_points: int, count: int = 3) -> list[int]:
    """Up to `count` k values near `chosen`: from the sweep grid, else k/2, 1.5k and 2k."""
    candidates = sorted({int(k) for k in grid if int(k) != chosen})
    if not candidates:
        fallback = {max(2, chosen // 2), chosen + max(1, chosen // 2), 2 * chosen}
        candidates = sorted(fallback - {chosen})
    candidates = [k for k in candidates if 2 <= k < n_points]
    return sorted(sorted(candidates, key=lambda k: (abs(k - chosen), k))[:count])


def project_2d(reduced: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Two-dimensional coordinates of `reduced` by t-SNE or by its first two PCA axes."""
    if reduced.shape[1] < 2:
        return np.column_stack([reduced[:, 0], np.zeros(len(reduced))])
    if method == "pca" or len(reduced) < 5:
        return PCA(n_components=2, random_state=seed).fit_transform(reduced)
    perplexity = float(min(30.0, (len(reduced) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                max_iter=500).fit_transform(reduced)
