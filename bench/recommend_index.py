"""Nearest-neighbour search for the semantic source: the former hand-written numpy exact search
and IVF (spherical k-means lists, as recommend/index.py had them before issue #15, kept here as
the reference) against faiss-cpu's IndexFlatIP and IndexIVFFlat, which recommend/index.py now
uses, side by side on the same unit vectors (clustered synthetic rows), with recall@N against
exact search.

    .venv/bin/python bench/recommend_index.py [--n 100000] [--queries 2000] [--top 20]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import faiss
import numpy as np
from sklearn.cluster import KMeans

from querylens.recommend.index import top_n
from querylens.runtime.arrays import normalize_rows


def exact_search(q: np.ndarray, vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The former numpy brute force: chunked matmul + top_n."""
    chunk = max(1, 20_000_000 // max(len(vectors), 1))
    parts = [top_n(q[s:s + chunk] @ vectors.T, n) for s in range(0, len(q), chunk)]
    return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])


def build_ivf(vectors: np.ndarray, lists: int, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """The former IVF: sklearn KMeans lists on a sample, members stored contiguously."""
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), size=min(len(vectors), 50_000), replace=False)]
    centroids = normalize_rows(KMeans(n_clusters=lists, n_init=1, max_iter=20,
                                      random_state=seed).fit(sample).cluster_centers_)
    assigned = np.argmax(vectors @ centroids.T, axis=1)
    order = np.argsort(assigned, kind="stable")
    return centroids, order, np.searchsorted(assigned[order], np.arange(lists + 1))


def ivf_search(q: np.ndarray, ivf: tuple[np.ndarray, np.ndarray, np.ndarray],
               vectors: np.ndarray, n: int, probe: int) -> np.ndarray:
    """The former IVF search (vectorised per list): top-n within each query's `probe` nearest
    lists, merged."""
    centroids, order, offsets = ivf
    m = len(q)
    probes = top_n(q @ centroids.T, probe)[1]
    best_s = np.full((m, probe * n), -np.inf, dtype=np.float32)
    best_i = np.full((m, probe * n), -1, dtype=np.int64)
    flat = probes.ravel()
    by_list = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[by_list], np.arange(len(offsets)))
    for lst in np.unique(flat):
        picked = by_list[bounds[lst]:bounds[lst + 1]]
        rows, slots = picked // probe, picked % probe
        members = order[offsets[lst]:offsets[lst + 1]]
        if len(members) == 0:
            continue
        s, i = top_n(q[rows] @ vectors[members].T, n)
        cols = slots[:, None] * n + np.arange(n)
        best_s[rows[:, None], cols] = s
        best_i[rows[:, None], cols] = np.where(i >= 0, members[np.maximum(i, 0)], -1)
    _, pos = top_n(best_s, n)
    return np.where(pos >= 0, np.take_along_axis(best_i, np.maximum(pos, 0), axis=1), -1)


def blobs(n: int, d: int, centers: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centers, d))
    return normalize_rows(middle[rng.integers(0, centers, n)] + 0.6 * rng.normal(size=(n, d)))


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--probe", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    base = blobs(args.n, args.dim, 200, seed=1)
    q = blobs(args.queries, args.dim, 200, seed=2)
    lists = int(round(np.sqrt(args.n)))
    (_, want), exact_s = timed(lambda: exact_search(q, base, args.top))  # type: ignore[misc]
    ivf, ivf_build = timed(lambda: build_ivf(base, lists, seed=0))
    ours, ivf_s = timed(lambda: ivf_search(q, ivf, base, args.top, args.probe))  # type: ignore
    flat = faiss.IndexFlatIP(args.dim)
    _, flat_build = timed(lambda: flat.add(base))
    (_, fflat), flat_s = timed(lambda: flat.search(q, args.top))  # type: ignore[misc]

    def faiss_ivf() -> faiss.Index:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(args.dim), args.dim, lists,
                                   faiss.METRIC_INNER_PRODUCT)
        sample = base[np.random.default_rng(0).choice(args.n, min(args.n, 50_000), False)]
        index.train(sample)
        index.add(base)
        index.nprobe = args.probe
        return index

    findex, fivf_build = timed(faiss_ivf)
    (_, fivf), fivf_s = timed(lambda: findex.search(q, args.top))  # type: ignore[attr-defined,misc]
    print(f"machine: {platform.platform()}; {args.n} x {args.dim} unit rows, {args.queries} "
          f"queries, top {args.top}, {lists} lists, probe {args.probe}, faiss threads "
          f"{args.threads}")
    print("| search | build s | search s | queries/s | recall@N vs exact |")
    print("| --- | --- | --- | --- | --- |")
    for name, build, search, got in [
        ("former exact (numpy)", 0.0, exact_s, want),
        ("faiss IndexFlatIP", flat_build, flat_s, fflat),
        ("former IVF (numpy, sklearn KMeans)", ivf_build, ivf_s, ours),
        ("faiss IndexIVFFlat", fivf_build, fivf_s, fivf),
    ]:
        print(f"| {name} | {build:.2f} | {search:.2f} | {args.queries / search:,.0f} | "
              f"{recall(np.asarray(got), want):.4f} |")


if __name__ == "__main__":
    main()
