import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from querylens.recommend.index import (
    build_index,
    build_ivf,
    exact_search,
    ivf_search,
    normalize_rows,
    recall_at_n,
    recommend_batch,
)
from querylens.runtime.config import load_config


def blobs(n: int, d: int, centers: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centers, d))
    return normalize_rows(middle[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, d)))


def reference(q: np.ndarray, base: np.ndarray, n: int) -> np.ndarray:
    nn = NearestNeighbors(n_neighbors=n, metric="cosine", algorithm="brute").fit(
        base.astype(np.float64))
    return nn.kneighbors(q.astype(np.float64), return_distance=False)


def test_exact_search_matches_sklearn_cosine_neighbours() -> None:
    base, q = blobs(3000, 24, 30, seed=1), blobs(200, 24, 30, seed=2)
    sims, idx = exact_search(q, base, 10)
    want = reference(q, base, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, want, strict=True)]) > 0.999
    np.testing.assert_allclose(sims[:, 0], np.einsum("ij,ij->i", q, base[want[:, 0]]),
                               atol=1e-5)
    short_s, short_i = exact_search(q[:2], base[:3], 5)
    assert (short_i[:, 3:] == -1).all() and np.isneginf(short_s[:, 3:]).all()


def test_ivf_recall_against_exact() -> None:
    base, q = blobs(20000, 32, 60, seed=3), blobs(500, 32, 60, seed=4)
    want = reference(q, base, 10)
    ivf = build_ivf(base, None, probe=8, seed=0)
    assert len(ivf.centroids) == 141
    _, got = ivf_search(q, ivf, base, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert recall > 0.9
    everything = build_ivf(base, 20, probe=20, seed=0)
    _, full = ivf_search(q, everything, base, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full, want, strict=True)]) > 0.999


def make_index(config):
    rng = np.random.default_rng(0)
    axes = np.eye(8, dtype=np.float32)
    rows = []
    for cluster_id, axis in [(0, 0), (1, 1), (2, 2)]:
        for j in range(6):
            v = axes[axis] + 0.2 * rng.normal(size=8)
            rows.append({"query_key": f"c{cluster_id}q{j}", "query": f"query {cluster_id}-{j}",
                         "cluster_id": cluster_id, "smoothed_score": 0.4 + 0.01 * j,
                         "support": 20 + j, "embedding": v.astype(np.float32)})
    candidates = pd.DataFrame(rows)
    centroids = pd.DataFrame({"cluster_id": [0, 1, 2, 3],
                              "centroid": [axes[0], axes[1], axes[2], axes[3]]})
    rates = {0: 0.8, 1: 0.7, 2: 0.1, 3: 0.2}
    return build_index(centroids, rates, candidates, config), candidates


def failing(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query_key", "query", "cluster_id", "success",
                                       "p_success", "embedding"])


def test_recommendations_come_from_the_right_successful_cluster() -> None:
    config = load_config(None, ["recommend.n_recommendations=3",
                                "recommend.min_similarity=0.5"]).recommend
    index, candidates = make_index(config)
    assert sorted(index.clusters) == [0, 1]
    e = np.eye(8, dtype=np.float32)
    batch = failing([
        ("own", "in a good cluster", 0, False, 0.3, e[0] + 0.1 * e[4]),
        ("near1", "in a bad cluster near 1", 3, False, 0.2, e[1] + 0.6 * e[3]),
        ("pred", "predicted to fail", 1, None, 0.1, e[1]),
        ("lonely", "far from everything", 0, False, 0.2, e[5]),
        ("c0q2", "itself a candidate", 0, True, 0.1, candidates["embedding"][2]),
    ])
    out = recommend_batch(batch, index, config)
    served = out[out["rec_query_key"].notna()]
    good = set(candidates.loc[candidates["cluster_id"].isin([0, 1]), "query_key"])
    assert set(served["rec_query_key"]) <= good
    assert set(out.loc[out["query_key"] == "own", "rec_cluster_id"]) == {0}
    assert set(out.loc[out["query_key"] == "near1", "rec_cluster_id"]) == {1}
    assert "nearest successful cluster 1" in out.loc[out["query_key"] == "near1",
                                                      "reason"].iloc[0]
    assert "predicted to fail (p_success 0.10" in out.loc[out["query_key"] == "pred",
                                                           "reason"].iloc[0]
    assert "c0q2" not in set(out.loc[out["query_key"] == "c0q2", "rec_query_key"])
    lonely = out[out["query_key"] == "lonely"]
    assert len(lonely) == 1 and pd.isna(lonely["rank"].iloc[0])
    assert "no successful query with similarity >= 0.50" in lonely["reason"].iloc[0]
    ranked = served[served["query_key"] == "own"]
    assert ranked["rank"].tolist() == [1, 2, 3]
    assert ranked["similarity"].is_monotonic_decreasing
    own = normalize_rows((e[0] + 0.1 * e[4])[None])
    cands = normalize_rows(np.vstack(candidates["embedding"][:6]))
    best = candidates["query_key"][np.argsort(-(cands @ own[0]), kind="stable")[:3]].tolist()
    assert ranked["rec_query_key"].tolist() == best


def test_successful_clusters_scope_is_brute_force_over_every_successful_cluster() -> None:
    config = load_config(None, ["recommend.n_recommendations=4", "recommend.min_similarity=-1",
                                "recommend.scope=successful_clusters"]).recommend
    index, candidates = make_index(config)
    e = np.eye(8, dtype=np.float32)
    query = e[1] + 0.9 * e[0]
    out = recommend_batch(failing([("x", "between 0 and 1", 0, False, 0.2, query)]), index, config)
    good = candidates[candidates["cluster_id"].isin([0, 1])].reset_index(drop=True)
    want = reference(normalize_rows(query[None]), normalize_rows(np.vstack(good["embedding"])), 4)
    assert out["rec_query_key"].tolist() == good["query_key"][want[0]].tolist()
    assert out["rec_cluster_id"].tolist() == good["cluster_id"][want[0]].tolist()
    assert set(out["rec_cluster_id"]) == {0, 1}
    assert out["reason"].str.contains("searched all 2 successful clusters; from cluster").all()
    cent = normalize_rows(e[out["rec_cluster_id"].to_numpy()])
    np.testing.assert_allclose(out["cluster_distance"],
                               1 - cent @ normalize_rows(query[None])[0], atol=1e-6)
    narrow = recommend_batch(failing([("x", "between 0 and 1", 0, False, 0.2, query)]), index,
                             load_config(None, ["recommend.n_recommendations=4"]).recommend)
    assert set(narrow["rec_cluster_id"]) == {0}


def test_no_successful_cluster_gives_explained_rows() -> None:
    config = load_config(None, ["recommend.min_cluster_success_rate=0.95"]).recommend
    index, _ = make_index(config)
    assert not index.clusters
    out = recommend_batch(failing([("x", "x", 0, False, 0.1, np.eye(8)[0])]), index, config)
    assert out["reason"].tolist() == ["failed (label); no successful cluster"]


def test_recall_is_measured_only_where_ivf_is_used() -> None:
    config = load_config(None, ["recommend.index=ivf", "recommend.ivf_lists=3",
                                "recommend.ivf_probe=3"]).recommend
    index, candidates = make_index(config)
    q = normalize_rows(np.vstack(candidates["embedding"]))
    recall, counted = recall_at_n(q, candidates["cluster_id"].to_numpy(), index, 3)
    assert recall == pytest.approx(1.0) and counted == len(q)
    exact_config = load_config(None, ["recommend.index=exact"]).recommend
    exact_index, _ = make_index(exact_config)
    assert recall_at_n(q, candidates["cluster_id"].to_numpy(), exact_index, 3) == (None, 0)
