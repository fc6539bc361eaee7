"""GPU throughput of the Fashion CLIP text tower: the naive way, our encoder, and where time goes.

    PYTHONPATH=lib python3 bench/embed_gpu.py            # on a GPU machine, about 4 minutes
    PYTHONPATH=lib python3 bench/embed_gpu.py --smoke    # tiny sizes on the CPU, under a minute

Needs only torch, transformers and numpy (no Spark, no sentence-transformers). The model is the
CLIP ViT-B/32 text config (what patrickjohncyh/fashion-clip uses) with random weights: speed does
not depend on the values. Queries are distinct fashion queries with filters (about 6 CLIP tokens),
tokenized by CLIP's real BPE tokenizer from `work/clip_tokenizer` (see
querylens.embed.clip_tokenizer; carry that folder to an offline machine).

Rows measured, each end to end from a list of Python strings to a float32 numpy array unless
named otherwise:
  naive        pad to 77, float32, batches of 200, tokenizer called per batch (the notebook)
  hf-dynamic   tokenizer called per batch with dynamic padding and an attention mask
  encoder      querylens ClipTextEncoder: word-cached tokenizer a chunk ahead on a thread,
               length-sorted batches padded to their longest row, no mask (causal attention)
  +graphs      the same replaying CUDA graphs
  N workers    N processes sharing the GPU, as Spark runs N tasks per GPU
               (spark.task.resource.gpu.amount = 1/N)
  tokenizer / model alone: the two halves, to show where the time goes
Prints a markdown table and writes $OUT/embed_gpu.json when $OUT is set.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from querylens.demo.samples import fashion_queries  # noqa: E402
from querylens.embed.encoders import ClipTextEncoder, chunks, quiet_transformers  # noqa: E402
from querylens.embed.tokens import fast_tokenizer, sorted_batches  # noqa: E402

PEAK_TFLOPS = {  # dense tensor-core peaks; float32 without TF32 (torch's default for matmul)
    "H200": {"float16": 989.0, "bfloat16": 989.0, "float32": 67.0},
    "H100 PCIe": {"float16": 756.0, "bfloat16": 756.0, "float32": 51.0},
    "H100": {"float16": 989.0, "bfloat16": 989.0, "float32": 67.0},
    "A100": {"float16": 312.0, "bfloat16": 312.0, "float32": 19.5},
    "L4": {"float16": 121.0, "bfloat16": 121.0, "float32": 30.0},
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Bench:
    """Shared state: device, model folder, queries, budget and the rows measured so far."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.start = time.monotonic()
        self.device = args.device
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.folder = Path(tempfile.mkdtemp(prefix="clip_b32_"))
        self.tokenizer_note = save_model(self.folder, args.smoke)
        cfg = json.loads((self.folder / "config.json").read_text())["text_config"]
        self.macs_per_token = cfg["num_hidden_layers"] * (
            4 * cfg["hidden_size"] ** 2 + 2 * cfg["hidden_size"] * cfg["intermediate_size"])
        self.queries = fashion_queries(args.n, seed=5)
        from transformers import AutoTokenizer

        self.hf_tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        tokens = fast_tokenizer(self.hf_tokenizer, 77)(self.queries)
        self.tokens_per_query = float(tokens.lengths.mean())
        self.gpu_name = torch.cuda.get_device_name() if self.cuda else "cpu"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def peak(self, dtype: str) -> float | None:
        for name, peaks in PEAK_TFLOPS.items():
            if name in self.gpu_name and dtype in peaks:
                return peaks[dtype] * 1e12
        return None

    def add(self, path: str, dtype: str, batch: int | str, n: int, seconds: float,
            memory: float | None, note: str = "") -> dict[str, Any]:
        qps = n / seconds
        flops = qps * self.tokens_per_query * 2 * self.macs_per_token
        peak = self.peak(dtype)
        row = {
            "path": path, "dtype": dtype, "batch": batch, "queries": n,
            "seconds": round(seconds, 3), "queries_per_s": round(qps),
            "gpu_mem_mib": None if memory is None else round(memory / 2**20),
            "tflops": round(flops / 1e12, 2),
            "fraction_of_peak": None if peak is None else round(flops / peak, 4),
            "flop_limit_queries_per_s": None if peak is None else round(
                peak / (self.tokens_per_query * 2 * self.macs_per_token)),
            "note": note,
        }
        self.rows.append(row)
        print(f"  {path:<34} {dtype:<9} {batch!s:>6} {qps:>12,.0f} q/s  {note}", flush=True)
        return row

    def skip(self, what: str) -> None:
        self.notes.append(f"skipped {what}: time budget")
        print(f"  skipped {what}: {self.left():.0f}s of budget left", flush=True)


def save_model(folder: Path, smoke: bool) -> str:
    """Save a random CLIP (ViT-B/32 text config; tiny when smoking) and CLIP's tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    text = ({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4} if smoke else
            {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
             "num_attention_heads": 8})
    config = CLIPConfig(
        text_config={**text, "max_position_embeddings": 77, "vocab_size": 49408,
                     "hidden_act": "quick_gelu"},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 16},
        projection_dim=64 if smoke else 512,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer, note = clip_tokenizer()
    tokenizer.save_pretrained(folder)
    return note


def clip_tokenizer() -> tuple[Any, str]:
    """CLIP's real tokenizer if it can be had offline, else a CLIP-style BPE trained here."""
    from transformers import AutoTokenizer

    from querylens.embed.clip_tokenizer import clip_tokenizer_folder

    try:
        return AutoTokenizer.from_pretrained(str(clip_tokenizer_folder(
            Path(os.environ.get("QUERYLENS_CLIP_TOKENIZER", ROOT / "work" / "clip_tokenizer"))
        ))), "CLIP's BPE tokenizer (49,408 tokens)"
    except Exception as exc:
        print(f"WARNING: CLIP's BPE vocabulary is not available ({exc}); training a CLIP-style "
              "BPE on other queries instead: token counts are only approximate", flush=True)
        return trained_tokenizer(), "a CLIP-style BPE trained here (CLIP's vocabulary missing)"


def trained_tokenizer() -> Any:
    """A CLIP-pipeline tokenizer with BPE merges learned from unrelated generated queries."""
    from tokenizers import Tokenizer, models, trainers
    from transformers import CLIPTokenizer

    from querylens.embed.clip_tokenizer import bytes_to_unicode

    base = CLIPTokenizer()
    backend: Tokenizer = base.backend_tokenizer
    backend.model = models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix="")
    alphabet = list(bytes_to_unicode().values())
    trainer = trainers.BpeTrainer(vocab_size=3000, initial_alphabet=alphabet,
                                  end_of_word_suffix="</w>",
                                  special_tokens=["<|startoftext|>", "<|endoftext|>"])
    backend.train_from_iterator(fashion_queries(5000, seed=999), trainer)
    vocab = backend.get_vocab()
    merges = json.loads(backend.to_str())["model"]["merges"]
    return CLIPTokenizer(vocab=vocab, merges=[" ".join(m) if isinstance(m, list) else m
                                              for m in merges])


def timed(bench: Bench, fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
    """Seconds and peak GPU memory of `fn()` (after synchronising)."""
    if bench.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if bench.cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated() if bench.cuda else None
    return seconds, memory, out


def text_model(bench: Bench, dtype: str) -> Any:
    from transformers import CLIPConfig, CLIPTextModelWithProjection

    config = CLIPConfig.from_pretrained(str(bench.folder))
    text = config.text_config
    text.projection_dim = config.projection_dim
    with quiet_transformers():
        model = CLIPTextModelWithProjection.from_pretrained(str(bench.folder), config=text)
    return model.to(bench.device, DTYPES[dtype]).eval()


def hf_loop(bench: Bench, model: Any, queries: list[str], batch: int, pad_to_77: bool) -> Any:
    """The obvious loop: tokenizer per batch, mask, forward, copy back."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(queries), batch):
            inputs = bench.hf_tokenizer(
                queries[start : start + batch], truncation=True, max_length=77,
                padding="max_length" if pad_to_77 else True, return_tensors="pt",
            ).to(bench.device)
            features = model(**inputs).text_embeds.float()
            out.append(torch.nn.functional.normalize(features, dim=-1).cpu().numpy())
    return np.concatenate(out)


def run_naive(bench: Bench) -> np.ndarray:
    model = text_model(bench, "float32")
    queries = bench.queries[: bench.args.n_naive]
    hf_loop(bench, model, queries[:400], 200, True)
    seconds, memory, out = timed(bench, lambda: hf_loop(bench, model, queries, 200, True))
    bench.add("naive: pad 77, fp32, HF tokenizer", "float32", 200, len(queries), seconds, memory)
    if bench.left() > 60:
        half = text_model(bench, bench.args.dtypes[-1] if bench.cuda else "float32")
        dtype = str(next(half.parameters()).dtype).removeprefix("torch.")
        hf_loop(bench, half, queries[:4096], 4096, False)
        seconds, memory, _ = timed(bench, lambda: hf_loop(bench, half, queries, 4096, False))
        bench.add("hf-dynamic: HF tokenizer, mask", dtype, 4096, len(queries), seconds, memory)
    return out


def encoder(bench: Bench, dtype: str, batch: int, graphs: bool = False) -> ClipTextEncoder:
    enc = ClipTextEncoder("bench", str(bench.folder), bench.device, True, batch, dtype, graphs)
    enc.encode(bench.queries[: min(len(bench.queries), 4 * batch)])
    return enc


def run_encoder(bench: Bench, reference: np.ndarray) -> None:
    args = bench.args
    for dtype in args.dtypes:
        for batch in args.batch_sizes:
            if bench.left() < 25:
                bench.skip(f"encoder {dtype} batch {batch}")
                continue
            enc = encoder(bench, dtype, batch)
            queries = bench.queries if dtype != "float32" else bench.queries[: args.n // 2]
            seconds, memory, out = timed(bench, lambda q=queries, e=enc: e.encode(q))
            close = agreement(out[: len(reference)], reference)
            bench.add("encoder", enc.dtype, batch, len(queries), seconds, memory, close)
            del enc


def run_graphs(bench: Bench, reference: np.ndarray) -> None:
    """The encoder replaying CUDA graphs (run last: a failed capture can upset the context)."""
    args = bench.args
    if bench.cuda:
        for dtype in [d for d in args.dtypes if d != "float32"]:
            for batch in args.graph_batch_sizes:
                if bench.left() < 40:
                    bench.skip(f"CUDA graphs {dtype} batch {batch}")
                    continue
                enc = encoder(bench, dtype, batch, graphs=True)
                enc.encode(bench.queries)
                seconds, memory, out = timed(bench, lambda e=enc: e.encode(bench.queries))
                failed = enc.graphs is None or enc.graphs.failed
                note = ("capture failed, ran eagerly; " if failed else
                        f"{len(enc.graphs.graphs)} graphs; ") + agreement(
                            out[: len(reference)], reference)
                bench.add("encoder +graphs", enc.dtype, batch, len(bench.queries), seconds,
                          memory, note)
                del enc


def agreement(out: np.ndarray, reference: np.ndarray) -> str:
    """Smallest cosine between our vectors and the naive float32 ones (both L2-normalised)."""
    return f"min cos vs naive {float(np.min(np.sum(out * reference, axis=1))):.5f}"


def run_parts(bench: Bench) -> None:
    """The tokenizer alone and the model alone (pre-tokenized batches already on the device)."""
    queries = bench.queries
    seconds, _, _ = timed(bench, lambda: bench.hf_tokenizer(queries, padding=True,
                                                            return_tensors="np"))
    bench.add("tokenizer alone: HF, one call", "-", "all", len(queries), seconds, None,
              "no GPU work")
    cached = fast_tokenizer(bench.hf_tokenizer, 77)
    cached(queries[:10000])
    seconds, _, tokens = timed(bench, lambda: cached(queries))
    bench.add("tokenizer alone: word-cached", "-", "all", len(queries), seconds, None,
              "no GPU work")
    dtype = bench.args.dtypes[-1] if bench.cuda else "float32"
    model = text_model(bench, dtype)
    batch = max(bench.args.batch_sizes)
    eos = int(bench.hf_tokenizer.eos_token_id)
    on_device = [torch.from_numpy(tokens.padded(rows, eos)).long().to(bench.device)
                 for rows in sorted_batches(tokens.lengths, batch)]

    def forward_all() -> None:
        with torch.inference_mode():
            for ids in on_device:
                model(input_ids=ids).text_embeds.float()

    forward_all()
    seconds, memory, _ = timed(bench, forward_all)
    bench.add("model alone: sorted pre-tokenized", dtype, batch, len(queries), seconds, memory,
              "ids already on device, no copy back")


def worker(rank: int, folder: str, queries: list[str], device: str, dtype: str, batch: int,
           chunk: int, threads: int, barrier: Any, results: Any) -> None:
    """One of N processes sharing the GPU, fed `chunk`-row lists as Spark feeds Arrow batches:
    load, warm up, wait for all, then time."""
    torch.set_num_threads(threads)
    enc = ClipTextEncoder("bench", folder, device, True, batch, dtype)
    enc.encode(queries[: 4 * batch])
    barrier.wait()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.monotonic()
    for _ in enc.encode_batches(chunks(queries, chunk)):
        pass
    end = time.monotonic()
    memory = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    results.put((rank, start, end, len(queries), memory))


def run_workers(bench: Bench) -> None:
    dtype = bench.args.dtypes[-1] if bench.cuda else "float32"
    context = mp.get_context("spawn")
    for n_workers, batch, chunk in bench.args.workers:
        if bench.left() < 45:
            bench.skip(f"{n_workers} workers, batch {batch}, {chunk}-row chunks")
            continue
        parts = [bench.queries[i::n_workers] for i in range(n_workers)]
        barrier = context.Barrier(n_workers)
        results = context.Queue()
        threads = max(1, (os.cpu_count() or 2) // n_workers)
        procs = [context.Process(target=worker, args=(
            i, str(bench.folder), parts[i], bench.device, dtype, batch, chunk, threads, barrier,
            results)) for i in range(n_workers)]
        for proc in procs:
            proc.start()
        try:
            got = [results.get(timeout=min(150.0, max(30.0, bench.left()))) for _ in procs]
        except Exception as exc:
            bench.notes.append(f"{n_workers} workers failed: {type(exc).__name__} {exc}")
            print(f"  {n_workers} workers failed: {exc!r}", flush=True)
            for proc in procs:
                proc.terminate()
            continue
        for proc in procs:
            proc.join()
        start, end = min(g[1] for g in got), max(g[2] for g in got)
        memory = [g[4] for g in got if g[4] is not None]
        bench.add(f"{n_workers} workers sharing the device", dtype, batch,
                  sum(g[3] for g in got), end - start, max(memory) if memory else None,
                  f"{chunk}-row chunks (Arrow batches); {threads} torch threads each; "
                  "memory is per worker")


def table(bench: Bench) -> str:
    lines = [
        f"Device: {bench.gpu_name}; torch {torch.__version__}; {os.cpu_count()} CPU cores; "
        f"{len(bench.queries):,} distinct queries, {bench.tokens_per_query:.2f} tokens per "
        f"query with start/end tokens ({bench.tokenizer_note}); "
        f"{bench.macs_per_token / 1e6:.2f}M multiply-adds per token.",
        "",
        "| path | dtype | batch | queries | queries/s | GPU MiB | TFLOP/s | of peak | "
        "FLOP-limit q/s | vs naive | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    naive = next((r["queries_per_s"] for r in bench.rows if r["path"].startswith("naive")), None)
    for r in bench.rows:
        speedup = f"{r['queries_per_s'] / naive:.1f}x" if naive else ""
        frac = "" if r["fraction_of_peak"] is None or r["dtype"] == "-" else (
            f"{r['fraction_of_peak']:.1%}")
        limit = "" if r["flop_limit_queries_per_s"] is None or r["dtype"] == "-" else (
            f"{r['flop_limit_queries_per_s']:,}")
        lines.append(
            f"| {r['path']} | {r['dtype']} | {r['batch']} | {r['queries']:,} | "
            f"{r['queries_per_s']:,} | {r['gpu_mem_mib'] if r['gpu_mem_mib'] is not None else ''}"
            f" | {r['tflops'] if r['dtype'] != '-' else ''} | {frac} | {limit} | {speedup} | "
            f"{r['note']} |")
    best = max((r for r in bench.rows if r["path"].startswith(("encoder", "1 ", "2 ", "4 ",
                                                                "8 "))),
               key=lambda r: r["queries_per_s"], default=None)
    if best is not None:
        lines += ["", f"Fastest end to end: {best['path']}, {best['dtype']}, batch "
                  f"{best['batch']}: {best['queries_per_s']:,} queries/s"
                  + (f" ({best['queries_per_s'] / naive:.0f}x naive)." if naive else ".")]
    lines += [f"Note: {n}" for n in bench.notes]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU is fine")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for everything")
    parser.add_argument("--n", type=int, default=262_144)
    parser.add_argument("--n-naive", type=int, default=20_000)
    args = parser.parse_args()
    args.dtypes = ["float32", "bfloat16", "float16"]
    args.batch_sizes = [256, 1024, 4096, 8192]
    args.graph_batch_sizes = [4096, 8192]
    args.workers = [(2, 4096, 8192), (4, 2048, 2048), (4, 4096, 8192), (8, 4096, 8192)]
    if args.smoke:
        args.n, args.n_naive = 1500, 300
        args.batch_sizes, args.graph_batch_sizes = [64, 256], [256]
        args.workers = [(2, 256, 512)]
    if not args.device.startswith("cuda"):
        args.dtypes = ["float32"]
        torch.set_num_threads(1)
    return args


def main() -> None:
    args = parse_args()
    print(f"embed_gpu: device {args.device}, budget {args.budget:.0f}s", flush=True)
    bench = Bench(args)
    print(f"  setup done in {time.monotonic() - bench.start:.0f}s; "
          f"{bench.tokens_per_query:.2f} tokens/query", flush=True)
    reference = run_naive(bench)
    for section in (run_parts, lambda b: run_encoder(b, reference), run_workers,
                    lambda b: run_graphs(b, reference)):
        try:
            section(bench)
        except Exception as exc:
            traceback.print_exc()
            bench.notes.append(f"a section failed: {type(exc).__name__}: {exc}")
    text = table(bench)
    print("\n" + text)
    result = {"rows": bench.rows, "device": bench.gpu_name, "torch": torch.__version__,
              "tokens_per_query": bench.tokens_per_query, "notes": bench.notes,
              "macs_per_token": bench.macs_per_token, "markdown": text,
              "seconds": round(time.monotonic() - bench.start, 1)}
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "embed_gpu.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
    print(f"total {time.monotonic() - bench.start:.0f}s")


if __name__ == "__main__":
    main()
