"""How close one CPU thread already runs the bundled MiniLM to the machine's float32 matmul peak.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_ceiling.py [--n 4000] [--reps 3]

Through the Spark UDF each task runs its encoder on one thread, so the fp32 speed-up ONNX
Runtime can give over torch is bounded by how far torch's single thread is from that thread's
float32 GEMM peak. Measured in one process, one thread, alternating, medians of `--reps`: torch
float32 and ONNX float32 queries/s on the same demo queries, the model's matmul FLOPs per query
(from its config and the real token counts), and numpy's single-thread sgemm GFLOP/s at the
model's own shapes (batch tokens x hidden @ hidden x intermediate). FLOPs are counted on the real
tokens; the encoders also compute the padding of each length-sorted batch (about 5% more here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import numpy as np  # noqa: E402


def matmul_flops(config, tokens: np.ndarray) -> float:  # noqa: ANN001
    """Multiply-add FLOPs of one BERT-style encoder pass over queries of `tokens` tokens each:
    per layer the Q, K, V, output and two feed-forward projections, plus attention scores."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * d * d + 2 * d * ff) * tokens
    attention = 2 * 2 * d * tokens * tokens
    return float(layers * (dense + attention).sum())


def sgemm_gflops(rows: int, d: int, ff: int, reps: int) -> float:
    """numpy float32 GEMM GFLOP/s (one thread) at the feed-forward shape."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((rows, d), dtype=np.float32), rng.standard_normal(
        (d, ff), dtype=np.float32)
    a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(20):
            a @ b
        times.append((time.perf_counter() - start) / 20)
    return 2 * rows * d * ff / statistics.median(times) / 1e9


def main() -> None:
    import torch

    from querylens.demo.samples import fashion_queries
    from querylens.embed.encoders import load_encoder
    from querylens.embed.onnx import onnx_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_encoder("minilm", "cpu", batch_size=args.batch_size)
    onnx = onnx_encoder(base, None, "none", threads=1)
    queries = fashion_queries(args.n, seed=11)
    tokens = np.array([len(ids) for ids in base.model.tokenizer(queries)["input_ids"]])
    config = base.model[0].auto_model.config
    flops = matmul_flops(config, tokens) / len(queries)
    speeds: dict[str, list[float]] = {"torch": [], "onnx": []}
    for encoder in (base, onnx):
        encoder.encode(queries[:256])
    for _ in range(args.reps):
        for name, encoder in (("torch", base), ("onnx", onnx)):
            start = time.perf_counter()
            encoder.encode(queries)
            speeds[name].append(len(queries) / (time.perf_counter() - start))
    rows = int(np.mean(tokens) * args.batch_size)
    peak = sgemm_gflops(rows, config.hidden_size, config.intermediate_size, args.reps)
    print(f"{len(queries)} queries, mean {tokens.mean():.1f} tokens (incl. [CLS]/[SEP]), "
          f"{flops / 1e6:.1f} matmul MFLOP per query; one thread; medians of {args.reps}")
    print(f"numpy sgemm at {rows}x{config.hidden_size} @ {config.hidden_size}x"
          f"{config.intermediate_size}: {peak:.1f} GFLOP/s")
    for name, values in speeds.items():
        qps = statistics.median(values)
        print(f"{name} float32: {qps:.0f} q/s = {qps * flops / 1e9:.1f} GFLOP/s "
              f"({qps * flops / 1e9 / peak:.0%} of sgemm); runs {[round(v) for v in values]}")
    torch_qps = statistics.median(speeds["torch"])
    print(f"onnx / torch {statistics.median(speeds['onnx']) / torch_qps:.2f}x; a 2x backend "
          f"would need {2 * torch_qps * flops / 1e9 / peak:.0%} of sgemm")


if __name__ == "__main__":
    main()
