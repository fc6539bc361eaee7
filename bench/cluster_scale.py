"""Fit, assign, per-query silhouette and the cluster tables at scale on local Spark.

Synthetic 384-d query vectors (a Gaussian mixture, generated in Spark and kept as Parquet
under --data-dir) go through the cluster stage's `write_clusters` exactly as in a run:
validation, fit (backend by config), assignment of every query, exact per-query
squared-Euclidean silhouette, sampled Euclidean silhouette, clusters (c-TF-IDF terms,
exemplars), stability ARI, model save, and the table writes. Driver peak memory is sampled
from /proc for the Python driver and the Spark JVM (in local mode the JVM is driver and
executor).

    .venv/bin/python bench/cluster_scale.py --rows 1000000 [--backend auto] [--sweep]
    .venv/bin/python bench/cluster_scale.py --rows 200000 --baseline --repeats 3 [--profile]

Without --sweep the model is the old fixed 10 components x 15 clusters; with it, the default
`auto` two-axis sweep and choice run first. --baseline times, in the same session and
alternating with querylens, the plain pyspark.ml pipeline Normalizer -> PCA -> KMeans ->
ClusteringEvaluator with the same components, clusters, seed, max_iter and tol; --profile
prints the wall time of each Spark action (and table write) by its querylens caller.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import Pipeline
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import PCA, Normalizer
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.classic.dataframe import DataFrame as ClassicFrame

from querylens.cluster.stage import write_clusters
from querylens.runtime.config import Config, load_config
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


ACTIONS: list[tuple[type, str]] = [(ClassicFrame, "collect"), (ClassicFrame, "toPandas"),
                                    (ClassicFrame, "count"), (ClassicFrame, "first"),
                                    (DataFrameWriter, "saveAsTable"), (SparkSession, "sql")]


class ActionTimer:
    """Wall time and number of Spark actions (collect, toPandas, count, first, saveAsTable,
    sql) by the innermost querylens line that called them; nested calls count once."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)
        self._saved: list[tuple[type, str, Callable[..., Any]]] = []
        self._depth = 0

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            frames = [f for f in traceback.extract_stack()[:-1] if "querylens" in f.filename]
            where = (f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}"
                     if frames else "bench")
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                self.seconds[where] += time.perf_counter() - start
                self.calls[where] += 1
        return timed

    def __enter__(self) -> ActionTimer:
        for cls, name in ACTIONS:
            fn = getattr(cls, name)
            self._saved.append((cls, name, fn))
            setattr(cls, name, self._wrap(fn))
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, fn in self._saved:
            setattr(cls, name, fn)

    def report(self) -> str:
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return "\n".join(f"{s:8.2f} s {self.calls[w]:3d}x  {w}" for w, s in rows)


def baseline(frame: DataFrame, config: Config) -> dict[str, float]:
    """The plain pyspark.ml pipeline on `embedding`: fit, predict, evaluate (silhouette)."""
    c = config.cluster
    vectors = frame.select(array_to_vector(F.col("embedding")).alias("raw"))
    stages: list[Any] = [Normalizer(p=2.0, inputCol="raw", outputCol="unit"),
              PCA(k=int(c.n_components), inputCol="unit", outputCol="features"),
              KMeans(k=int(c.n_clusters), maxIter=c.max_iter, tol=c.tol, seed=c.seed,
                     initSteps=c.init_steps)]
    start = time.perf_counter()
    model = Pipeline(stages=stages).fit(vectors)
    silhouette = ClusteringEvaluator().evaluate(model.transform(vectors))
    return {"seconds": time.perf_counter() - start,
            "inertia": float(model.stages[-1].summary.trainingCost),  # type: ignore[attr-defined]
            "silhouette_sqeuclidean": float(silhouette)}


def querylens_run(spark: SparkSession, frame: DataFrame, config: Config, name: str
                  ) -> dict[str, Any]:
    """`write_clusters` on `frame`, timed; its facts, inertia and table counts."""
    run = Run(spark, config, run_id=name)
    run.facts["embed"] = {"model_id": "synthetic", "model_revision": "0"}
    start = time.perf_counter()
    facts = write_clusters(run, frame.select("query_key", "embedding"),
                           frame.select("query_key", "query", "n_searches"))
    seconds = time.perf_counter() - start
    inertia = run.read("model_metrics").where(
        (F.col("split") == "all") & (F.col("metric") == "inertia")).first()
    assert inertia is not None
    return {"seconds": seconds, "facts": facts, "inertia": float(inertia["value"]),
            "counts": dict(run.counts)}


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--centers", type=int, default=50)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
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
        ours: list[dict[str, Any]] = []
        plain: list[dict[str, float]] = []
        loads = [load_average()]
        timer = ActionTimer()
        for i in range(args.repeats):
            if args.baseline:
                plain.append(baseline(frame, config))
            with timer if args.profile and i == 0 else contextlib.nullcontext():
                ours.append(querylens_run(spark, frame, config,
                                          f"scale-{args.rows}-{args.backend}"))
            loads.append(load_average())
    if args.profile:
        print(timer.report())
    last = ours[-1]
    facts = last["facts"]
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cpus", "rows": args.rows,
        "dim": args.dim, "backend": facts["backend"], "fit_rows": facts["fit_rows"],
        "sweep": args.sweep, "seconds": [round(r["seconds"], 1) for r in ours],
        "median_seconds": round(statistics.median(r["seconds"] for r in ours), 1),
        "choice": facts["choice_reason"],
        "python_driver_peak_gb": round(peak.python / 2**30, 2),
        "jvm_peak_gb": round(peak.jvm / 2**30, 2),
        "inertia": round(last["inertia"], 3),
        "silhouette_sqeuclidean": round(facts["silhouette_sqeuclidean"], 4),
        "silhouette_euclidean_sampled": round(facts["silhouette_euclidean_sampled"], 4),
        "load_average_1min": loads, "counts": last["counts"],
    }
    if plain:
        median = statistics.median(r["seconds"] for r in plain)
        report["baseline"] = {"seconds": [round(r["seconds"], 1) for r in plain],
                              "median_seconds": round(median, 1),
                              "inertia": round(plain[-1]["inertia"], 3),
                              "silhouette_sqeuclidean": round(
                                  plain[-1]["silhouette_sqeuclidean"], 4)}
        report["querylens_over_baseline"] = round(report["median_seconds"] / median, 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
