"""The notebook's sweep loop vs querylens's sweep, same data, same run.

Notebook: for each (n_clusters, n_components) refit Normalizer -> PCA -> KMeans(k-means++,
n_init=50, max_iter=500) and take the full `silhouette_score`. querylens (`run_sweep` with the
ClusterConfig sweep defaults): one PCA with every component, sliced per grid point; the
notebook's KMeans(n_init=cluster.sweep_full_n_init) up to cluster.sweep_full_n_init_components
components, fewer restarts plus warm starts above, all on one thread; the Euclidean silhouette
of every point in one pass, exact on a seeded sample of cluster.sweep_silhouette_sample_size
rows. The notebook loop also runs a second time under threadpool_limits(1), like for like.

    .venv/bin/python bench/cluster_notebook.py [--rows 10000] [--dim 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from threadpoolctl import threadpool_limits

from querylens.cluster.backends import fit_projection_sklearn
from querylens.cluster.sweep import run_sweep
from querylens.runtime.config import ClusterConfig


def mixture(rows: int, dim: int, centers: int, latent: int, seed: int) -> np.ndarray:
    """Query-embedding-like data: centres in a low-rank subspace plus isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(latent, dim))
    means = rng.normal(size=(centers, latent)) @ basis / np.sqrt(latent)
    weights = rng.dirichlet(np.ones(centers) * 2)
    labels = rng.choice(centers, size=rows, p=weights)
    within = rng.normal(size=(rows, latent)) @ basis / np.sqrt(latent) * 0.6
    return (means[labels] + within + rng.normal(size=(rows, dim)) * 0.35).astype(np.float32)


def notebook_loop(X: np.ndarray, points: list[tuple[int, int]]) -> pd.DataFrame:
    rows = []
    for p, k in points:
        process = make_pipeline(Normalizer(), PCA(n_components=p, random_state=42))
        Z = process.fit_transform(X)
        km = KMeans(n_clusters=k, init="k-means++", n_init=50, max_iter=500,
                    random_state=42).fit(Z)
        rows.append({"n_components": p, "n_clusters": k, "inertia": km.inertia_,
                     "silhouette": silhouette_score(Z, km.labels_)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    config = ClusterConfig()
    X = mixture(args.rows, args.dim, centers=25, latent=60, seed=0)
    load_before = os.getloadavg()

    start = time.perf_counter()
    ours = run_sweep(X, fit_projection_sklearn(X, config.seed), config.sweep_components,
                     config.sweep_clusters, n_init=config.sweep_n_init,
                     max_iter=config.max_iter, tol=config.tol, seed=config.seed,
                     silhouette_sample_size=config.sweep_silhouette_sample_size,
                     full_n_init=config.sweep_full_n_init,
                     full_n_init_components=config.sweep_full_n_init_components)
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    print(f"querylens sweep: {ours_s:.1f}s", flush=True)
    points = list(zip(ours["n_components"], ours["n_clusters"], strict=True))
    notebook = notebook_loop(X, points)
    notebook_s = time.perf_counter() - start
    start = time.perf_counter()
    with threadpool_limits(1):
        one_thread = notebook_loop(X, points)
    notebook_1t_s = time.perf_counter() - start
    same = np.allclose(one_thread["silhouette"], notebook["silhouette"], atol=1e-6)

    both = notebook.merge(ours, on=["n_components", "n_clusters"])
    both["diff"] = (both["silhouette_euclidean_sampled"] - both["silhouette"]).abs()
    print(both[["n_components", "n_clusters", "silhouette", "silhouette_euclidean_sampled",
                "diff", "inertia_x", "inertia_y"]].to_string(index=False))
    summary = {"machine": f"{platform.node()} {platform.machine()}", "rows": args.rows,
               "dim": args.dim, "grid_points": len(both), "notebook_s": round(notebook_s, 1),
               "querylens_s": round(ours_s, 1), "speedup": round(notebook_s / ours_s, 1),
               "notebook_1thread_s": round(notebook_1t_s, 1),
               "speedup_vs_1thread": round(notebook_1t_s / ours_s, 1),
               "notebook_1thread_same_silhouettes": bool(same),
               "max_silhouette_diff": round(float(both["diff"].max()), 4),
               "within_0.02": int((both["diff"] <= 0.02).sum()),
               "sweep_n_init": config.sweep_n_init, "sweep_full_n_init": config.sweep_full_n_init,
               "sweep_full_n_init_components": config.sweep_full_n_init_components,
               "sweep_silhouette_sample_size": config.sweep_silhouette_sample_size,
               "load_before": load_before, "load_after": os.getloadavg()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
