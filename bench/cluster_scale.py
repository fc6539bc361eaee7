"""Fit, assign, per-query silhouette and the cluster tables at scale on local Spark.

Synthetic 384-d query vectors (a Gaussian mixture, generated in Spark and kept as Parquet
under --data-dir) go through the cluster stage's `write_clusters` exactly as in a run:
validation, fit (backend by config), assignment of every query, exact per-query
squared-Euclidean silhouette, sampled Euclidean silhouette, clusters (c-TF-IDF terms,
exemplars), stability ARI, model save, and the table writes. Driver peak memory is sampled
from /proc for the Python driver and the Spark JVM (in local mode the JVM is driver and
executor).

    .venv/bin/python bench/cluster_scale.py --rows 1000000 [--backend auto] [--sweep]

Without --sweep the model is the old fixed 10 components x 15 clusters; with it, the default
`auto` two-axis sweep and choice run first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from querylens.cluster.stage import write_clusters
from querylens.runtime.config import load_config
from querylens.runtime.runs import Run
from querylens.runtime.session import build_session

WORDS = [["nike", "adidas", "zara", "gucci", "levis", "puma", "mango", "prada"],
         ["dress", "jeans", "sneakers", "boots", "jacket", "shirt", "bag", "skirt"],
         ["red", "black", "white", "blue", "green", "beige", "pink", "grey"]]


def generate(spark: SparkSession, rows: int, dim: int, centers: int, path: Path) -> None:
    """Mixture of `centers` Gaussians in a 40-d subspace plus noise, with query text."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(40, dim))
    means = (rng.normal(size=(centers, 40)) @ basis / np.sqrt(40)).astype(np.float32)

    def batches(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for part in parts:
            ids = part["id"].to_numpy()
            if not len(ids):
                continue
            r = np.random.default_rng(int(ids[0]) + 1)
            labels = r.integers(0, centers, size=len(ids))
            within = (r.normal(size=(len(ids), 40)) @ basis / np.sqrt(40) * 0.6)
            X = means[labels] + within + r.normal(size=(len(ids), dim)) * 0.35
            words = [[w[(c * (j + 3) + j) % len(w)] for j, w in enumerate(WORDS)]
                     for c in labels]
            yield pd.DataFrame({
                "query_key": [f"{i:016x}" for i in ids],
                "embedding": list(X.astype(np.float32)),
                "query": [f"{a} {b} {c} {i % 97}" for (a, b, c), i in zip(words, ids,
                                                                          strict=True)],
                "n_searches": (1 + r.zipf(1.8, size=len(ids)) % 1000).astype("int64"),
            })

    schema = "query_key string, embedding array<float>, query string, n_searches long"
    parts = max(4, rows // 50_000)
    spark.range(rows, numPartitions=parts).mapInPandas(batches, schema).write.mode(
        "overwrite").parquet(str(path))


class PeakMemory:
    """Peak RSS of this Python process and of its child JVM, sampled every 0.2 s."""

    def __init__(self) -> None:
        self.python = self.jvm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def java_children(self) -> list[int]:
        found = []
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().split()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[3]) == me and b"java" in cmd:
                found.append(int(entry.name))
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            self.python = max(self.python, self.rss(os.getpid()))
            for pid in self.java_children():
                try:
                    self.jvm = max(self.jvm, self.rss(pid))
                except OSError:
                    pass
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--centers", type=int, default=50)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "ql_bench"))
    args = parser.parse_args()
    root = Path(args.data_dir)
    config = load_config(None, [
        f"run.warehouse_dir={root / 'warehouse'}", f"run.metastore_dir={root / 'metastore'}",
        f"run.output_dir={root / 'output'}", "spark.shuffle_partitions=8",
        f"spark.conf={{spark.driver.memory: '{args.driver_memory}', spark.ui.enabled: 'false'}}",
        f"cluster.backend={args.backend}", f"cluster.sweep={str(args.sweep).lower()}",
        "cluster.match_previous=false",
        *([] if args.sweep else ["cluster.n_components=10", "cluster.n_clusters=15"]),
    ])
    with PeakMemory() as peak:
        spark = build_session(config)
        data = root / f"vectors_{args.rows}_{args.dim}"
        if not (data / "_SUCCESS").exists():
            start = time.perf_counter()
            generate(spark, args.rows, args.dim, args.centers, data)
            print(f"generated {args.rows} x {args.dim} in {time.perf_counter() - start:.0f}s")
        frame: DataFrame = spark.read.parquet(str(data))
        run = Run(spark, config, run_id=f"scale-{args.rows}-{args.backend}")
        run.facts["embed"] = {"model_id": "synthetic", "model_revision": "0"}
        start = time.perf_counter()
        facts = write_clusters(run, frame.select("query_key", "embedding"),
                               frame.select("query_key", "query", "n_searches"))
        seconds = time.perf_counter() - start
    print(json.dumps({
        "machine": f"{platform.node()} {os.cpu_count()} cpus", "rows": args.rows,
        "dim": args.dim, "backend": facts["backend"], "fit_rows": facts["fit_rows"],
        "sweep": args.sweep, "seconds": round(seconds, 1),
        "choice": facts["choice_reason"],
        "python_driver_peak_gb": round(peak.python / 2**30, 2),
        "jvm_peak_gb": round(peak.jvm / 2**30, 2),
        "silhouette_sqeuclidean": round(facts["silhouette_sqeuclidean"], 4),
        "silhouette_euclidean_sampled": round(facts["silhouette_euclidean_sampled"], 4),
        "counts": run.counts,
    }))


if __name__ == "__main__":
    main()
