"""Success model and recommendations at scale on synthetic embeddings (issue #6 time targets).

Synthetic data generated inside Spark (one seeded generator per partition): `--rows` queries,
`--dim`-d unit embeddings around `--topics` topic centres grouped into `--clusters` clusters,
a planted success direction, Zipf-like support. Timed steps:

1. train: collect the labelled queries to the driver through Arrow and fit SuccessMLP as the
   success stage does (config; `auto` = TorchDistributor from 200k training rows);
2. score: P(success) for every query through the pandas UDF, written as Parquet;
3. recommend: build the index of successful queries, broadcast it, recommend for every failing
   query in `mapInPandas`, written as Parquet; IVF recall@N against exact on a sample;
4. exact vs IVF search side by side on a sample of failing queries (driver, one process).

    .venv/bin/python bench/success_scale.py [--rows 1000000] [--dim 384] [--skip-train]
        [--all-labelled] [--set success.batch_size=1024 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from querylens.recommend.index import (
    build_index,
    recall_at_n,
    recommend_df,
    search,
    stack,
    target_clusters,
)
from querylens.runtime.arrays import with_matrix
from querylens.runtime.config import load_config
from querylens.success.model import SuccessMLP, score_column
from querylens.success.stage import success_model

SCHEMA = ("query_key string, query string, cluster_id int, support long, smoothed_score double, "
          "success boolean, embedding array<float>")


def centres(topics: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(topics, dim))
    direction = rng.normal(size=dim)
    return c / np.linalg.norm(c, axis=1, keepdims=True), direction / np.linalg.norm(direction)


def generator(topics: int, clusters: int, dim: int, seed: int, min_support: int):
    def generate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        c, direction = centres(topics, dim, seed)
        for batch in batches:
            ids = batch["id"].to_numpy()
            rng = np.random.default_rng([seed, int(ids[0])])
            topic = rng.integers(0, topics, len(ids))
            emb = c[topic] + rng.normal(size=(len(ids), dim)) * (0.9 / np.sqrt(dim))
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            effect = (topic % 7 - 3) * 0.25
            p = 1 / (1 + np.exp(-(8 * emb @ direction + effect)))
            support = np.minimum(rng.zipf(1.6, len(ids)) + min_support, 100_000)
            score = rng.binomial(support, p * 0.6) / support
            success = np.where(support >= 5, rng.random(len(ids)) < p, None)
            yield pd.DataFrame({
                "query_key": [f"q{i:09d}" for i in ids], "query": [f"query {i}" for i in ids],
                "cluster_id": (topic * clusters // topics).astype("int32"),
                "support": support.astype("int64"), "smoothed_score": score,
                "success": success, "embedding": list(emb.astype(np.float32)),
            })
    return generate


def timed(label: str, fn, times: dict[str, float]):
    start = time.perf_counter()
    out = fn()
    times[label] = round(time.perf_counter() - start, 1)
    print(f"{label}: {times[label]}s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--topics", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=15)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--all-labelled", action="store_true",
                        help="every query has support >= 5, so all --rows are labelled")
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="success-scale-"))
    config = load_config(None, [f"run.warehouse_dir={root / 'warehouse'}", *args.overrides])
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "8g")
             .config("spark.driver.maxResultSize", "4g")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
             .config("spark.sql.shuffle.partitions", str(args.partitions)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    times: dict[str, float] = {}
    data_path = str(root / "data")
    timed("generate", lambda: spark.range(args.rows, numPartitions=args.partitions)
          .mapInPandas(generator(args.topics, args.clusters, args.dim, 11,
                                 5 if args.all_labelled else 1), SCHEMA)
          .write.parquet(data_path), times)
    data = spark.read.parquet(data_path)
    cfg, rcfg = config.success, config.recommend
    model = None
    if not args.skip_train:
        labelled, x = timed("train_collect", lambda: with_matrix(
            data.where(F.col("success").isNotNull()).select(
                "embedding", F.col("success").cast("int").alias("y"),
                (F.abs(F.xxhash64("query_key")) % 100).alias("b")), "embedding"), times)
        y = labelled["y"].to_numpy()
        b = labelled["b"].to_numpy()
        del labelled
        train, val, test = b >= 30, (b >= 15) & (b < 30), b < 15
        model = timed("train_fit", lambda: success_model(cfg, int(train.sum())).fit(
            x[train], y[train], x[val], y[val]), times)
        auc = roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])
        print(f"labelled {len(y)} (train {train.sum()}), backend {model.backend} x "
              f"{model.world_size_}, batch {model.batch_size}, epochs {len(model.history_)}, "
              f"best {model.best_epoch_}, test AUC {auc:.4f}", flush=True)
        del x
    else:
        small = data.where(F.col("success").isNotNull()).limit(20_000).toPandas()
        model = SuccessMLP(hidden_sizes=tuple(cfg.hidden_sizes), max_epochs=3).fit(
            np.vstack(small["embedding"].to_numpy()), small["success"].astype(int).to_numpy())
    start_total = time.perf_counter()
    scored_path = str(root / "scored")
    timed("score", lambda: data.withColumn("p_success", score_column(
        model, F.col("embedding"), batch_size=cfg.scoring_batch_size))
        .drop("embedding").write.parquet(scored_path), times)
    scored = spark.read.parquet(scored_path).select("query_key", "p_success")
    frame = data.join(scored, "query_key")
    cut = rcfg.predicted_fail_below
    failing = frame.where((F.col("success") == F.lit(False)) | (F.col("p_success") < cut))
    candidates = frame.where((F.col("success") == F.lit(True))
                             & (F.col("support") >= rcfg.min_support)
                             & (F.col("p_success") >= cut))
    cands = timed("candidates_collect", lambda: candidates.toPandas(), times)
    cent = pd.DataFrame({"cluster_id": np.arange(args.clusters),
                         "centroid": list(np.vstack([
                             stack(g["embedding"]).mean(0)
                             for _, g in cands.groupby("cluster_id")]))})
    rates = {c: 0.6 for c in range(args.clusters)}
    index = timed("index_build", lambda: build_index(cent, rates, cands, rcfg), times)
    recs, shared = recommend_df(failing, index, rcfg)
    timed("recommend", lambda: recs.write.parquet(str(root / "recs")), times)
    shared.destroy()
    times["score_and_recommend_total"] = round(time.perf_counter() - start_total, 1)
    out = spark.read.parquet(str(root / "recs"))
    summary = out.agg(F.countDistinct("query_key").alias("failing"),
                      F.count("rec_query_key").alias("recs")).first()
    sample = failing.select("cluster_id", "embedding").limit(args.sample).toPandas()
    q = stack(sample["embedding"])
    own = sample["cluster_id"].to_numpy(dtype=np.int64)
    recall, counted = recall_at_n(q[:1000], own[:1000], index, rcfg.n_recommendations)
    target = target_clusters(q, own, index)
    side: dict[str, float] = {}
    for method in ("exact", "ivf"):
        start = time.perf_counter()
        for c in np.unique(target[target >= 0]):
            cluster = index.clusters[int(c)]
            if method == "ivf" and cluster.ivf is None:
                continue
            search(q[target == c], cluster, rcfg.n_recommendations + 1, method)
        side[method] = time.perf_counter() - start
    sizes = {k: len(v.keys) for k, v in index.clusters.items()}
    print(json.dumps({
        "machine": f"{platform.platform()} {platform.machine()}", "rows": args.rows,
        "dim": args.dim, "times_s": times, "failing_queries": summary["failing"],
        "recommendations": summary["recs"], "index_candidates": sum(sizes.values()),
        "ivf_clusters": sum(c.ivf is not None for c in index.clusters.values()),
        "recall_at_n": recall, "recall_queries": counted,
        "sample_search_s": {k: round(v, 2) for k, v in side.items()},
        "ivf_speedup": (round(side["exact"] / side["ivf"], 1)
                        if any(c.ivf is not None for c in index.clusters.values()) else None),
    }, indent=1), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
