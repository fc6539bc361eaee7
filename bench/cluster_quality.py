"""How well clusterings agree with human query classes: querylens's pipeline (Normalizer ->
PCA -> KMeans) over a grid of components, against independent baselines, on the same
embeddings in the same run.

Sets: `shop` (bench/data/shop_queries.csv: 240 hand-written shop queries in 15 classes,
written for this benchmark, independent of the demo generator) and `demo` (the demo
generator's catalogue, the class is its true_category; queries without one are left out).
Each set is embedded with the bundled MiniLM on the CPU. Methods, all at k = the number of
classes: querylens's KMeans on p PCA components for every p of the grid (`full` = every
component, i.e. no reduction), plain KMeans on the normalised embedding, Ward and
average-linkage cosine agglomerative clustering, and TF-IDF character n-grams + KMeans.
Reported: adjusted mutual information (AMI) with the classes and, for the PCA grid, the
Euclidean silhouette in the reduced space: the sweep's guidance. KMeans scores are medians
over `--seeds` seeds.

The `auto` check: the stage's own two-axis sweep (`run_sweep`, `cluster.*` defaults, grids
scaled to the set) with the classes, its `auto` choice (`select.choose`, labels unused), and
for that choice the AMI of the sweep's point vs the best grid point, and of the final fit
(n_init 10) vs plain KMeans on the normalised embedding at the same k: mean +- standard
deviation [range] over seeds 0..`--seeds`-1, and of the per-seed difference.
Spherical KMeans (`spherical_kmeans`) at the auto rule's components and at full dimension is
the candidate for `cluster.algorithm`.

    .venv/bin/python bench/cluster_quality.py [--demo-queries 3000] [--seeds 3] [--write]
        [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans, kmeans_plusplus
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import adjusted_mutual_info_score, silhouette_score

from docs_section import write_section
from querylens.cluster.backends import fit_kmeans_sklearn, fit_projection_sklearn
from querylens.cluster.select import choose, choose_components, components_of
from querylens.cluster.sweep import clusters_grid, components_grid, run_sweep
from querylens.runtime.arrays import normalize_rows
from querylens.runtime.config import ClusterConfig

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "bench" / "data" / "shop_queries.csv"
GRID = (5, 10, 20, 40, 80, 160)
MARKERS = ("<!-- cluster-quality:begin -->", "<!-- cluster-quality:end -->")
AUTO_MARKERS = ("<!-- cluster-auto:begin -->", "<!-- cluster-auto:end -->")


def shop_set() -> pd.DataFrame:
    return pd.read_csv(SHOP)


def demo_set(n_queries: int) -> pd.DataFrame:
    """The demo catalogue's search texts (query plus filters, lower-cased) and categories."""
    from pyspark.sql import SparkSession

    from querylens.demo.generator import FILTER_COLUMNS, generate_catalogue

    spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false") \
        .getOrCreate()
    rows = pd.DataFrame(generate_catalogue(spark, n_queries, 7).toPandas())
    spark.stop()
    parts = rows[["query", *FILTER_COLUMNS]].fillna("")
    text = parts.apply(lambda r: re.sub(r"\s+", " ", " ".join(r).lower()).strip(), axis=1)
    out = pd.DataFrame({"query": text, "class": rows["true_category"]}).dropna()
    return out.drop_duplicates("query").reset_index(drop=True)


def embed(texts: list[str], cache: Path | None = None) -> np.ndarray:
    """MiniLM embeddings of `texts` (read from / written to `cache` when given and the texts
    match)."""
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            if z["q"].tolist() == texts:
                return np.asarray(z["X"], dtype=np.float64)
    from querylens.embed.encoders import load_encoder

    X = np.asarray(load_encoder("minilm", "cpu").encode(texts), dtype=np.float64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, X=X, q=np.array(texts))
    return X


def auto_check(name: str, X: np.ndarray, y: np.ndarray, seeds: int) -> dict[str, object]:
    """The stage's sweep and `auto` choice on one set, against the classes."""
    config = ClusterConfig()
    projection = fit_projection_sklearn(X, config.seed)
    cumulative = np.cumsum(projection.explained_variance_ratio_)
    grid = components_grid(config.sweep_components, len(cumulative),
                           components_of(config, cumulative)[0])
    ks = clusters_grid(config.sweep_clusters, len(X), config.sweep_clusters_min,
                       config.sweep_clusters_max, config.sweep_clusters_points)
    started = time.perf_counter()
    sweep = run_sweep(X, projection, grid, ks, n_init=config.sweep_n_init,
                      max_iter=config.max_iter, tol=config.tol, seed=config.seed,
                      silhouette_sample_size=config.sweep_silhouette_sample_size,
                      full_n_init=config.sweep_full_n_init,
                      full_n_init_components=config.sweep_full_n_init_components,
                      stability_sample_size=config.sweep_stability_sample_size,
                      classes=y.astype(object))
    sweep_s = time.perf_counter() - started
    choice = choose(config, cumulative, sweep)
    p, k = choice.n_components, choice.n_clusters
    at = sweep[(sweep.n_components == p) & (sweep.n_clusters == k)].iloc[0]
    best = sweep.loc[sweep["ami"].idxmax()]
    Z = projection.transform(X, p)
    final = amis_over_seeds(
        lambda s: fit_kmeans_sklearn(Z, k, config.n_init, 300, 1e-4, s).labels_, y, seeds)
    unit = normalize_rows(X, np.float64)
    plain = amis_over_seeds(
        lambda s: KMeans(k, n_init=10, random_state=s).fit(unit).labels_, y, seeds)
    gap = np.subtract(final, plain)
    print(f"{name}: sweep of {len(sweep)} points in {sweep_s:.1f} s; {choice.reason}")
    print(sweep[["n_components", "n_clusters", "silhouette_euclidean_sampled",
                 "stability_ari", "explained_variance", "ami"]].round(3).to_string())
    return {"set": name, "n": len(X), "classes": len(set(y)), "components": grid, "ks": ks,
            "points": len(sweep), "sweep_s": round(sweep_s, 1), "p": p, "k": k,
            "auto_sweep_ami": round(float(at.ami), 3), "best_ami": round(float(best.ami), 3),
            "best_point": f"({int(best.n_components)}, {int(best.n_clusters)})",
            "auto_fit_ami": spread(final), "plain_ami": spread(plain), "gap": spread(gap),
            "reason": choice.reason}


def auto_markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| set | queries | classes | grid (components x k) | auto (p, k) | AMI auto "
             "(sweep point) | best grid point: AMI | AMI auto (final fit) | plain KMeans, "
             "same k | final - plain, same seed | sweep time |",
             "| --- | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['n']} | {r['classes']} | {r['components']} x {r['ks']} "
            f"| ({r['p']}, {r['k']}) | {r['auto_sweep_ami']} | {r['best_point']}: "
            f"{r['best_ami']} | {r['auto_fit_ami']} | {r['plain_ami']} | {r['gap']} "
            f"| {r['sweep_s']} s |")
    lines += ["", *[f"- {r['set']}: {r['reason']}" for r in rows]]
    return "\n".join(lines) + "\n"


def amis_over_seeds(fit: Callable[[int], np.ndarray], y: np.ndarray, seeds: int
                    ) -> list[float]:
    """AMI of `fit(seed)`'s labels for seeds 0, 1, ..."""
    return [float(adjusted_mutual_info_score(y, fit(seed))) for seed in range(seeds)]


def spread(values: list[float] | np.ndarray) -> str:
    """Mean +- sample standard deviation over seeds, and the range."""
    v = np.asarray(values, dtype=float)
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} +- {sd:.3f} [{v.min():.3f}, {v.max():.3f}]"


def spherical_kmeans(X: np.ndarray, k: int, n_init: int, seed: int, max_iter: int = 300
                     ) -> np.ndarray:
    """Spherical KMeans (Dhillon & Modha): rows and centroids on the unit sphere, each row to
    the centroid of highest cosine, centroids re-normalised means; best of `n_init`
    k-means++ starts by total cosine."""
    U = normalize_rows(X, np.float64)
    rng = np.random.RandomState(seed)
    best, best_score = np.zeros(len(U), dtype=int), -np.inf
    for _ in range(n_init):
        C = normalize_rows(kmeans_plusplus(U, k, random_state=rng.randint(2**31))[0],
                           np.float64)
        labels = np.full(len(U), -1)
        for _ in range(max_iter):
            new = (U @ C.T).argmax(1)
            if (new == labels).all():
                break
            labels = new
            sums = np.zeros_like(C)
            np.add.at(sums, labels, U)
            empty = ~sums.any(1)
            sums[empty] = U[rng.choice(len(U), int(empty.sum()), replace=False)]
            C = normalize_rows(sums, np.float64)
        score = float((U * C[labels]).sum())
        if score > best_score:
            best, best_score = labels, score
    return best


def median_over_seeds(fit: Callable[[int], np.ndarray], y: np.ndarray, seeds: int,
                      space: np.ndarray | None = None) -> tuple[float, float | None]:
    """Median AMI (and silhouette in `space`) of `fit(seed)`'s labels over the seeds."""
    amis, sils = [], []
    for seed in range(seeds):
        labels = fit(seed)
        amis.append(adjusted_mutual_info_score(y, labels))
        if space is not None:
            sils.append(silhouette_score(space, labels))
    return statistics.median(amis), (statistics.median(sils) if sils else None)


def evaluate(name: str, data: pd.DataFrame, seeds: int, cache: Path | None = None
             ) -> tuple[list[dict[str, object]], dict[str, object]]:
    texts, y = data["query"].tolist(), data["class"].to_numpy()
    k = len(set(y))
    started = time.perf_counter()
    X = embed(texts, None if cache is None else cache / f"{name}.npz")
    embed_s = time.perf_counter() - started
    unit = normalize_rows(X, np.float64)
    projection = fit_projection_sklearn(X, 42)
    rows: list[dict[str, object]] = []

    def add(method: str, ami: float, silhouette: float | None = None,
            variance: float | None = None) -> None:
        rows.append({"set": name, "n": len(texts), "classes": k, "method": method,
                     "ami": round(ami, 3),
                     "silhouette": None if silhouette is None else round(silhouette, 3),
                     "explained_variance": None if variance is None else round(variance, 3)})

    for p in [*[p for p in GRID if p < min(X.shape)], min(X.shape)]:
        Z = projection.transform(X, p)
        def fit(s: int, Z: np.ndarray = Z) -> np.ndarray:
            return np.asarray(fit_kmeans_sklearn(Z, k, 10, 300, 1e-4, s).labels_)

        ami, sil = median_over_seeds(fit, y, seeds, Z)
        label = "querylens PCA full" if p == min(X.shape) else f"querylens PCA {p}"
        add(label + (" (notebook)" if p == 10 else ""), ami, sil,
            float(projection.explained_variance_ratio_[:p].sum()))
    add("KMeans on the normalised embedding", median_over_seeds(
        lambda s: KMeans(k, n_init=10, random_state=s).fit(unit).labels_, y, seeds)[0])
    for p in (choose_components(np.cumsum(projection.explained_variance_ratio_),
                                ClusterConfig().auto_variance_target)[0], min(X.shape)):
        Z = projection.transform(X, p)
        add(f"spherical KMeans on PCA {p}", median_over_seeds(
            partial(spherical_kmeans, Z, k, 10), y, seeds)[0])
    add("Ward agglomerative", adjusted_mutual_info_score(
        y, AgglomerativeClustering(k, linkage="ward").fit_predict(unit)))
    add("average-linkage cosine agglomerative", adjusted_mutual_info_score(
        y, AgglomerativeClustering(k, metric="cosine", linkage="average").fit_predict(unit)))
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit_transform(texts)
    add("TF-IDF char 2-4-grams + KMeans", median_over_seeds(
        lambda s: KMeans(k, n_init=10, random_state=s).fit(tfidf).labels_, y, seeds)[0])
    print(f"{name}: {len(texts)} queries, {k} classes, embedded in {embed_s:.1f} s")
    return rows, auto_check(name, X, y.astype(str), seeds)


def markdown(rows: list[dict[str, object]], command: str) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end. Command: `{command}`", "",
        "| set | queries | classes (= k) | method | AMI | silhouette | explained variance |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        cells = ["" if r[c] is None else r[c] for c in
                 ("set", "n", "classes", "method", "ami", "silhouette", "explained_variance")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-queries", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    parser.add_argument("--cache", type=Path, help="folder caching the sets' embeddings")
    args = parser.parse_args()
    rows, shop_auto = evaluate("shop", shop_set(), args.seeds, args.cache)
    demo_rows, demo_auto = evaluate("demo", demo_set(args.demo_queries), args.seeds, args.cache)
    rows += demo_rows
    command = ("HF_HUB_OFFLINE=1 .venv/bin/python bench/cluster_quality.py "
               f"--demo-queries {args.demo_queries} --seeds {args.seeds}")
    table = markdown(rows, command)
    autos = auto_markdown([shop_auto, demo_auto])
    print(table)
    print(autos)
    print(json.dumps(rows))
    if args.write:
        for (begin, end), body, heading in [
                (MARKERS, table, "## Cluster quality against human classes (issue #14)"),
                (AUTO_MARKERS, autos, "### `auto` n_components and n_clusters (issue #14)")]:
            write_section(ROOT / "docs" / "BENCHMARKS.md", f"{begin}\n{body}{end}", begin, end,
                          heading)


if __name__ == "__main__":
    main()
