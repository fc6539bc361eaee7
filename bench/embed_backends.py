"""CPU embedding backends through the Spark UDF: torch float32 vs ONNX float32 vs ONNX int8.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_backends.py [--n 10000] [--reps 3] [--write]

The bundled MiniLM embeds the same distinct fashion queries through querylens' UDF on
`local[N]` (one core per task), all three backends in the same run, alternating. A warm-up pass
on a few queries loads each backend in the workers; each timed pass collects the vectors to the
driver. The first pass's vectors are compared with torch float32's: max abs diff, mean/min
cosine, top-10 neighbour overlap (cosine, over all queries) and the ARI of a seeded KMeans
(k=20) on each backend's vectors against the one on torch's. `--write` puts the table into
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from docs_section import write_section  # noqa: E402
from embed_throughput import cpu_name, spark_session  # noqa: E402
from querylens.demo.samples import fashion_queries  # noqa: E402

BEGIN, END = "<!-- embed-backends:begin -->", "<!-- embed-backends:end -->"
BACKENDS = {"torch float32": ("torch", "none"), "onnx float32": ("onnx", "none"),
            "onnx int8": ("onnx", "int8")}


def settings_for(name: str, batch_size: int, onnx_dir: str | None):  # noqa: ANN201
    from querylens.embed.udf import EncoderSettings

    backend, quantize = BACKENDS[name]
    return EncoderSettings("minilm", "cpu", True, batch_size, "float32", backend=backend,
                           quantize=quantize, onnx_dir=onnx_dir, guard=False)


def embedded(df, settings):  # noqa: ANN001, ANN201
    from pyspark.sql import functions as F

    from querylens.embed.udf import embed_struct_column

    return df.select("i", embed_struct_column(F.col("query"), settings).alias("e"))


def warm(df, settings) -> None:  # noqa: ANN001
    """Load the backend in every worker (the noop sink collects nothing)."""
    embedded(df, settings).write.format("noop").mode("overwrite").save()


def collected(df, settings, n: int) -> tuple[np.ndarray, list[str], float]:  # noqa: ANN001
    """The vectors in query order, the device labels seen, and the seconds it took."""
    start = time.perf_counter()
    rows = embedded(df, settings).select("i", "e.embedding", "e.device").collect()
    seconds = time.perf_counter() - start
    vectors = np.empty((n, 384), dtype=np.float32)
    for row in rows:
        vectors[row.i] = row.embedding
    return vectors, sorted({row.device for row in rows}), seconds


def neighbours(vectors: np.ndarray, k: int = 10, chunk: int = 2048) -> np.ndarray:
    """Indices of each row's k nearest other rows by cosine (rows are unit vectors)."""
    out = np.empty((len(vectors), k), dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        rows = np.arange(start, min(start + chunk, len(vectors)))
        sims[rows - start, rows] = -np.inf
        out[rows] = np.argpartition(-sims, k, axis=1)[:, :k]
    return out


def compare(got: np.ndarray, ref: np.ndarray, ref_nn: np.ndarray, ref_labels: np.ndarray,
            seed: int) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    g, r = got.astype(np.float64), ref.astype(np.float64)
    cos = (g * r).sum(1) / np.linalg.norm(g, axis=1) / np.linalg.norm(r, axis=1)
    nn = neighbours(got)
    overlap = np.mean([len(set(a) & set(b)) / nn.shape[1] for a, b in zip(nn, ref_nn,
                                                                          strict=True)])
    labels = KMeans(20, n_init=3, random_state=seed).fit_predict(got)
    return {"max_abs_diff": float(np.abs(g - r).max()), "mean_cos": float(cos.mean()),
            "min_cos": float(cos.min()), "overlap": float(overlap),
            "ari": float(adjusted_rand_score(ref_labels, labels))}


def main() -> None:
    from sklearn.cluster import KMeans

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--onnx-dir", default=None, help="export cache (default ~/.cache/...)")
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()

    from querylens.embed.encoders import load_encoder
    from querylens.embed.onnx import onnx_encoder

    start = time.perf_counter()
    base = load_encoder("minilm", "cpu", batch_size=args.batch_size)
    for quantize in ("none", "int8"):
        onnx_encoder(base, args.onnx_dir, quantize)
    export_s = time.perf_counter() - start
    queries = fashion_queries(args.n, seed=11)
    spark = spark_session(args.cores)
    df = spark.createDataFrame(list(enumerate(queries)), "i int, query string")
    df = df.repartition(args.cores).cache()
    df.count()
    load = [os.getloadavg()[0]]
    settings = {name: settings_for(name, args.batch_size, args.onnx_dir) for name in BACKENDS}
    small = df.limit(64 * args.cores).repartition(args.cores)
    for s in settings.values():
        warm(small, s)
    first: dict[str, tuple[np.ndarray, list[str], float]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for _ in range(args.reps):
        for name, s in settings.items():
            result = collected(df, s, args.n)
            first.setdefault(name, result)
            seconds[name].append(result[2])
        load.append(os.getloadavg()[0])
    spark.stop()
    ref = first["torch float32"][0]
    ref_nn = neighbours(ref)
    ref_labels = KMeans(20, n_init=3, random_state=0).fit_predict(ref)
    quality = {name: compare(v[0], ref, ref_nn, ref_labels, 0) for name, v in first.items()}
    table = report(args, seconds, quality, {n: v[1] for n, v in first.items()}, export_s,
                   statistics.mean(load))
    print(table)
    if args.write:
        write_section(ROOT / "docs" / "BENCHMARKS.md", table, BEGIN, END,
                      "### CPU backends: torch vs ONNX Runtime (#18)")


def report(args: argparse.Namespace, seconds: dict[str, list[float]],
           quality: dict[str, dict[str, float]], devices: dict[str, list[str]],
           export_s: float, load: float) -> str:
    import onnxruntime
    import pyspark
    import torch

    qps = {name: args.n / statistics.median(s) for name, s in seconds.items()}
    torch_qps = qps["torch float32"]
    rows = [
        f"| {name} (`{', '.join(devices[name])}`) | "
        f"{' / '.join(f'{s:.1f}' for s in seconds[name])} | {qps[name]:,.0f} | "
        f"{qps[name] / torch_qps:.2f}x | {q['max_abs_diff']:.1e} | {q['mean_cos']:.6f} | "
        f"{q['min_cos']:.6f} | {q['overlap']:.3f} | {q['ari']:.3f} |"
        for name, q in quality.items()
    ]
    fp32 = qps["onnx float32"] / torch_qps
    diff = quality["onnx float32"]["max_abs_diff"]
    lines = [
        BEGIN,
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, no GPU, shared with other work (mean "
        f"load average {load:.1f} during the run). torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, pyspark {pyspark.__version__}.",
        "",
        f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_backends.py --n {args.n} "
        f"--reps {args.reps} --write`",
        "",
        f"{args.n:,} distinct fashion queries, bundled MiniLM (384-d), querylens' UDF on "
        f"`local[{args.cores}]`, 1 thread per task, batch size {args.batch_size}, warm "
        f"workers, {args.reps} timed run(s) per backend (each collects the vectors), "
        f"alternating in one Spark session. "
        f"Agreement columns compare each backend's vectors with torch float32's on all "
        f"{args.n:,} queries; top-10 overlap is the share of each query's 10 nearest "
        f"neighbours (cosine) that torch float32 also finds; ARI compares a seeded KMeans "
        f"(k=20, n_init=3, seed 0, sklearn) on each backend's vectors with the same KMeans on "
        f"torch's (torch's own row is the reference, 1.0 by construction). Exporting both "
        f"ONNX files (first use only; cached afterwards) took {export_s:.0f} s, not timed "
        f"below.",
        "",
        "| backend (device record) | seconds per run | queries/s (median) | vs torch | "
        "max abs diff | mean cosine | min cosine | top-10 overlap | KMeans ARI |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Target: the default CPU backend (`auto` = ONNX float32) at least 2x torch float32 "
        f"with vectors within 1e-5: {'met' if fp32 >= 2 and diff <= 1e-5 else 'NOT met'} "
        f"({fp32:.2f}x, max abs diff {diff:.1e}).",
        END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
