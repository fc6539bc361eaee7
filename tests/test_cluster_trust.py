"""Trust per cluster: clusterwise bootstrap stability, the trusted and catch-all rules, and the
exact Euclidean silhouette samples (numpy and sklearn only, no Spark)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_samples

from querylens.cluster.fit import bootstrap_stability, mean_within, with_trust
from querylens.cluster.silhouette import silhouette_samples_euclidean
from querylens.cluster.trust import (
    best_match_jaccard,
    catch_all_flags,
    clusterwise_stability,
    trusted_flags,
)
from querylens.runtime.config import ClusterConfig


def test_best_match_jaccard_by_hand() -> None:
    original = np.array([0, 0, 0, 1, 1, 1, 2])
    other = np.array([5, 5, 7, 7, 7, 7, 9])
    ids, best = best_match_jaccard(original, other)
    # C0 = {0,1,2}: D5 = {0,1} -> 2/3, D7 = {2..5} -> 1/6.  C1 = {3,4,5}: D7 -> 3/4.
    # C2 = {6}: D9 = {6} -> 1.
    assert ids.tolist() == [0, 1, 2]
    assert best == pytest.approx([2 / 3, 3 / 4, 1.0])


def test_clusterwise_stability_matches_a_set_count_of_the_same_draws() -> None:
    Z = np.arange(8, dtype=float)[:, None]
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])

    def refit(X: np.ndarray, b: int) -> np.ndarray:
        return (X[:, 0] >= 3 + b % 2).astype(int)  # threshold 3 or 4

    n_boot, seed = 5, 11
    ours = clusterwise_stability(Z, labels, refit, n_boot, seed)
    rng = np.random.default_rng(seed)
    sums = {0: 0.0, 1: 0.0}
    seen = {0: 0, 1: 0}
    for b in range(n_boot):
        drawn = set(rng.integers(0, 8, 8).tolist())
        refitted = {r: int(r >= 3 + b % 2) for r in drawn}
        for c in (0, 1):
            C = {r for r in drawn if labels[r] == c}
            if not C:
                continue
            best = max(len(C & D) / len(C | D) for D in (
                {r for r in drawn if refitted[r] == d} for d in set(refitted.values())))
            sums[c] += best
            seen[c] += 1
    assert ours == pytest.approx({c: sums[c] / seen[c] for c in (0, 1)})
    exact = clusterwise_stability(Z, labels, lambda X, b: (X[:, 0] >= 4).astype(int), 5, 0)
    assert exact == pytest.approx({0: 1.0, 1: 1.0})


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight, well-separated blobs (150 rows each) and 450 rows of uniform noise in a
    box far from them, in 10 dimensions; the truth (0-2 blobs, 3 noise)."""
    rng = np.random.default_rng(seed)
    d = 10
    blobs = [20 * np.eye(d)[i] + rng.normal(scale=0.5, size=(150, d)) for i in range(3)]
    noise = rng.uniform(-3, 3, size=(450, d)) - 20.0
    return np.vstack([*blobs, noise]), np.repeat([0, 1, 2, 3], [150, 150, 150, 450])


def trust_table(Z: np.ndarray, labels: np.ndarray, config: ClusterConfig) -> pd.DataFrame:
    """The stage's trust columns for a labelling of driver rows."""
    ids = np.unique(labels)
    s, _, within = silhouette_samples_euclidean(Z, labels)
    centroids = np.vstack([Z[labels == i].mean(0) for i in ids])
    distance = np.linalg.norm(Z - centroids[np.searchsorted(ids, labels)], axis=1)
    table = pd.DataFrame({
        "cluster_id": ids, "size": np.bincount(labels)[ids],
        "mean_silhouette_sqeuclidean": np.nan,
        "mean_silhouette_euclidean_sampled": [s[labels == i].mean() for i in ids]})
    mean_distance = np.array([distance[labels == i].mean() for i in ids])
    return with_trust(table, mean_distance, mean_within(labels, within, ids), Z, labels,
                      len(ids), config)


def test_planted_blobs_are_stable_and_trusted_noise_is_not() -> None:
    Z, truth = planted()
    k = 7
    labels = KMeans(k, n_init=10, random_state=0).fit(Z).labels_
    order = np.random.default_rng(1).permutation(len(Z))  # the stage's sample is in hash order
    config = ClusterConfig(n_clusters=k, stability_bootstraps=20,
                           stability_bootstrap_sample_size=len(Z))
    table = trust_table(Z[order], labels[order], config).set_index("cluster_id")
    for c, row in table.iterrows():
        members = np.bincount(truth[labels == c], minlength=4)
        if members[3]:
            assert members[:3].sum() == 0
            assert row["stability"] < 0.6 and row["trusted"] is False, (c, row["stability"])
        else:
            assert row["stability"] > 0.9 and row["trusted"] is True, (c, row["stability"])
            assert not row["catch_all"]


def test_stability_is_null_and_trust_unknown_without_bootstraps() -> None:
    Z, _ = planted()
    labels = KMeans(4, n_init=3, random_state=0).fit(Z).labels_
    config = ClusterConfig(n_clusters=4, stability_bootstraps=0)
    assert bootstrap_stability(Z, labels, 4, config) == {}
    table = trust_table(Z, labels, config)
    assert table["stability"].isna().all() and table["trusted"].isna().all()


def test_catch_all_is_far_from_its_centroid_and_between_members() -> None:
    # Cluster 3 is twice as spread as the median cluster on both counts; cluster 2 only on one.
    flags = catch_all_flags(np.array([1.0, 1.1, 3.0, 2.5]), np.array([1.4, 1.5, 1.6, 3.5]), 1.25)
    assert flags.tolist() == [False, False, False, True]
    assert catch_all_flags(np.array([1.0, 9.0]), np.array([1.0, 9.0]), 1.25).tolist() == [
        False, False]
    noisy = catch_all_flags(np.array([1.0, 1.0, 5.0]), np.array([np.nan] * 3), 1.25)
    assert noisy.tolist() == [False, False, False]


def test_trusted_rule() -> None:
    flags = trusted_flags(np.array([50, 50, 50, 5, 50, 50]),
                          np.array([0.9, 0.7, 0.9, 0.9, 0.9, np.nan]),
                          np.array([0.2, 0.2, -0.1, 0.2, 0.2, 0.2]),
                          np.array([False, False, False, False, True, False]),
                          min_stability=0.75, min_size=10)
    assert flags.tolist() == [True, False, False, False, False, None]


def test_silhouette_samples_equal_sklearns_with_the_nearest_other_cluster() -> None:
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(700, 6))
    labels = rng.integers(0, 5, 700) * 3
    labels[5] = 40  # a singleton: silhouette 0
    s, nearest, within = silhouette_samples_euclidean(Z, labels, chunk_rows=128)
    assert np.abs(s - silhouette_samples(Z, labels)).max() < 1e-10
    D = np.sqrt(((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1))
    ids = np.unique(labels)
    means = np.stack([D[:, labels == c].mean(1) for c in ids], axis=1)
    means[np.arange(len(Z)), np.searchsorted(ids, labels)] = np.inf
    assert np.array_equal(nearest, ids[means.argmin(1)])
    own = labels == labels[0]
    assert within[0] == pytest.approx(D[0, own].sum() / (own.sum() - 1))


def test_config_rejects_bad_trust_settings() -> None:
    from querylens.runtime.config import ConfigError, load_config

    for item in ("cluster.trust_min_stability=1.5", "cluster.stability_bootstraps=-1",
                 "cluster.catch_all_ratio=0", "cluster.trust_min_size=0"):
        with pytest.raises(ConfigError, match=item.split("=")[0]):
            load_config(None, [item])
    assert dataclasses.asdict(load_config(None, []).cluster)["stability_bootstraps"] == 20


def test_a_diffuse_cluster_among_tight_ones_is_a_catch_all_and_not_trusted() -> None:
    rng = np.random.default_rng(2)
    d = 8
    blobs = [20 * np.eye(d)[i] + rng.normal(scale=0.5, size=(100, d)) for i in range(5)]
    diffuse = rng.uniform(-4, 4, size=(100, d)) - 20.0
    Z = np.vstack([*blobs, diffuse])
    labels = KMeans(6, n_init=10, random_state=0).fit(Z).labels_
    config = ClusterConfig(n_clusters=6, stability_bootstraps=10,
                           stability_bootstrap_sample_size=len(Z))
    table = trust_table(Z, labels, config).set_index("cluster_id")
    wide = int(np.bincount(labels[500:]).argmax())
    assert table["catch_all"].tolist() == [c == wide for c in table.index]
    assert table.loc[wide, "trusted"] is False
    assert table.drop(index=wide)["trusted"].tolist() == [True] * 5
