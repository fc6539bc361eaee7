"""ONNX Runtime backend: the torch encoders exported once, run on the CPU, checked at load time.

A sentence-transformers model is exported whole (transformer + pooling + the model's own
normalize module); a CLIP checkpoint as its text tower with the projection. The export is cached
under `<cache>/<model id>/<revision>/<kind>-<precision>.onnx`, written atomically, and int8 is
onnxruntime's dynamic quantization of the float32 export. `guarded` compares the backend's
vectors with torch float32 on a fixed sample and falls back to torch, loudly, when they disagree.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from querylens.embed.encoders import (
    ClipTextEncoder,
    Encoded,
    SentenceTransformerEncoder,
    prefetched,
    task_cpus,
)
from querylens.embed.tokens import Tokens, sorted_batches
from querylens.runtime.errors import ModelLoadError

log = logging.getLogger("querylens")

BACKENDS = ("torch", "onnx", "auto")
QUANTIZE = ("none", "int8")
EXPORT_VERSION = "v1"
OPSET = 17
CACHE_ENV = "QUERYLENS_ONNX_CACHE"
TorchEncoder = ClipTextEncoder | SentenceTransformerEncoder

BRANDS = ("adidas", "nike", "levi's", "zara", "h&m", "the north face", "dolce & gabbana", "uniqlo")
ITEMS = ("sneakers", "black dress", "jeans w32", "puffer jacket", "linen shirt", "ankle boots",
         "swim shorts", "leather handbag")
ODD = ["x", "赤いドレス", "кроссовки nike", "robe d'été à fleurs", "summer 👗 dress 🌸",
       "nike air max 90 white size 44", "wireless earb", "jeans", "vestido rojo largo",
       "the north face nuptse puffer jacket women black xl " * 8]
AGREEMENT_SAMPLE = [*ODD, *(f"{brand} {item}" for brand in BRANDS for item in ITEMS)]


def precision_of(quantize: str) -> str:
    """The precision record of an ONNX encoder: `onnx-float32` or `onnx-int8`."""
    if quantize not in QUANTIZE:
        raise ValueError(f"embed.quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    return "onnx-int8" if quantize == "int8" else "onnx-float32"


def default_cache_dir() -> str:
    """`$QUERYLENS_ONNX_CACHE`, else `~/.cache/querylens/onnx`."""
    return os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "querylens" / "onnx")


def export_path(cache_dir: str, model_id: str, revision: str, kind: str, precision: str) -> Path:
    """Where the export of (model id, revision, precision) lives in `cache_dir`."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_") or "model"
    rev = re.sub(r"[^A-Za-z0-9._-]+", "_", revision)
    return Path(cache_dir) / slug / rev / f"{kind}-{precision}-{EXPORT_VERSION}.onnx"


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` beside `path`, then move it into place; concurrent writers are safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sentence_module(model: Any, names: list[str]) -> Any:
    """A SentenceTransformer as a module of positional tensors (what the exporter traces)."""
    import torch

    class SentenceModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return self.model(dict(zip(names, inputs, strict=True)))["sentence_embedding"]

    return SentenceModule().eval()


def clip_text_module(model: Any) -> Any:
    """CLIP's text tower + projection as `input_ids -> text_embeds`."""
    import torch

    class ClipTextModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any) -> Any:
            return self.model(input_ids=input_ids).text_embeds

    return ClipTextModule().eval()


EXAMPLE = ["adidas campus women sneakers shoes", "black dress", "x"]


def sentence_inputs(encoder: SentenceTransformerEncoder, texts: list[str]) -> dict[str, Any]:
    """The model's tokenized inputs (tensors only), padded to the longest text."""
    features = encoder.model.preprocess(texts)
    return {k: v for k, v in features.items() if hasattr(v, "shape")}


def export_float32(encoder: TorchEncoder, path: Path) -> None:
    """Export a float32 CPU torch encoder to `path` (TorchScript exporter, dynamic batch/tokens)."""
    import torch

    if isinstance(encoder, ClipTextEncoder):
        tokens = encoder.tokenize(EXAMPLE)
        ids = torch.from_numpy(tokens.padded(np.arange(len(EXAMPLE)), encoder.pad_id)).long()
        module, args, names = clip_text_module(encoder.model), (ids,), ["input_ids"]
    else:
        features = sentence_inputs(encoder, EXAMPLE)
        names = list(features)
        module, args = sentence_module(encoder.model, names), tuple(features.values())
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in names}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, args, str(path), input_names=names, output_names=["embedding"],
                          dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)


def quantize_int8(source: Path, path: Path) -> None:
    """onnxruntime dynamic quantization of the MatMul weights, int8 per output channel
    (activations quantized per batch; embeddings and norms stay float32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])


def kind_of(encoder: TorchEncoder) -> str:
    return "clip-text" if isinstance(encoder, ClipTextEncoder) else "sentence"


def exported(encoder: TorchEncoder, cache_dir: str, quantize: str = "none") -> Path:
    """The cached export of `encoder` at `quantize`, exporting (and quantizing) on first use."""
    if encoder.device != "cpu" or encoder.dtype != "float32":
        raise ModelLoadError(f"ONNX export needs the float32 CPU torch encoder of "
                             f"{encoder.model_id}, got {encoder.device}/{encoder.dtype}")
    kind = kind_of(encoder)
    fp32 = export_path(cache_dir, encoder.model_id, encoder.revision, kind, "onnx-float32")
    if not fp32.is_file():
        log.info("exporting %s to ONNX at %s", encoder.model_id, fp32)
        write_atomically(fp32, lambda tmp: export_float32(encoder, tmp))
    if quantize == "none":
        return fp32
    target = export_path(cache_dir, encoder.model_id, encoder.revision, kind,
                         precision_of(quantize))
    if not target.is_file():
        write_atomically(target, lambda tmp: quantize_int8(fp32, tmp))
    return target


def ort_threads() -> int:
    """Intra-op threads: the task's cores (`spark.task.cpus`), else torch's thread count."""
    import torch

    return task_cpus() or torch.get_num_threads()


def ort_session(path: Path, threads: int) -> Any:
    """A CPU InferenceSession with `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their norm (at least 1e-12), as `torch.nn.functional.normalize` does."""
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return (vectors / norms).astype(np.float32)


class OnnxEncoder:
    """A torch encoder's tokenization with its model run by ONNX Runtime on the CPU."""

    backend = "onnx"

    def __init__(self, base: TorchEncoder, path: Path, quantize: str = "none",
                 threads: int | None = None):
        self.base = base
        self.path = path
        self.model_id = base.model_id
        self.revision = base.revision
        self.dim = base.dim
        self.max_tokens = base.max_tokens
        self.device = "cpu"
        self.precision = precision_of(quantize)
        self.dtype = self.precision
        self.threads = threads or ort_threads()
        try:
            self.session = ort_session(path, self.threads)
        except Exception as exc:
            raise ModelLoadError(f"cannot load the ONNX export {path} of {self.model_id}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The exported model on one batch, normalised when the torch encoder would be."""
        out = self.session.run(None, {n: feeds[n].astype(np.int64) for n in self.inputs})[0]
        vectors = np.asarray(out, dtype=np.float32)
        return l2_normalize(vectors) if self.base.normalize else vectors

    def clip_vectors(self, tokens: Tokens) -> np.ndarray:
        base = self.base
        assert isinstance(base, ClipTextEncoder)
        vectors = np.empty((len(tokens), self.dim), dtype=np.float32)
        for rows in sorted_batches(tokens.lengths, base.batch_size):
            vectors[rows] = self.run({"input_ids": tokens.padded(rows, base.pad_id)})
        return vectors

    def sentence_vectors(self, texts: list[str]) -> np.ndarray:
        base = self.base
        assert isinstance(base, SentenceTransformerEncoder)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), base.batch_size):
            rows = order[start : start + base.batch_size]
            features = sentence_inputs(base, [texts[i] for i in rows])
            vectors[rows] = self.run({k: v.numpy() for k, v in features.items()})
        return vectors

    def encode_batches(self, batches: Iterable[list[str]]) -> Iterator[Encoded]:
        """Embed each list of texts (CLIP tokenizes the next list while this one runs)."""
        base = self.base
        if isinstance(base, ClipTextEncoder):
            for tokens in prefetched(base.tokenize, batches):
                yield Encoded(self.clip_vectors(tokens), tokens.truncated)
        else:
            for texts in batches:
                yield Encoded(self.sentence_vectors(texts), base.truncated(texts))

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.concatenate([e.vectors for e in self.encode_batches([texts])])


def onnx_encoder(base: TorchEncoder, cache_dir: str | None, quantize: str = "none",
                 threads: int | None = None) -> OnnxEncoder:
    """The ONNX encoder of a float32 CPU torch encoder, exported to the cache on first use."""
    try:
        path = exported(base, cache_dir or default_cache_dir(), quantize)
    except (ModelLoadError, ValueError):
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot export {base.model_id} to ONNX ({quantize}): "
                             f"{type(exc).__name__}: {exc}") from exc
    return OnnxEncoder(base, path, quantize, threads)


@dataclass(frozen=True)
class Agreement:
    """Backend vectors vs torch float32 on the fixed sample, and the floor they were held to."""

    precision: str
    n: int
    mean_cosine: float
    min_cosine: float
    max_abs_diff: float
    min_mean_cosine: float
    min_min_cosine: float

    @property
    def passed(self) -> bool:
        return self.mean_cosine >= self.min_mean_cosine and self.min_cosine >= self.min_min_cosine


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64 (0 where a row is all zeros)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide((a * b).sum(axis=1), norms, out=np.zeros(len(a)), where=norms > 0)


def agreement(candidate: OnnxEncoder, reference: TorchEncoder, min_mean_cosine: float,
              min_cosine: float, texts: list[str] | None = None) -> Agreement:
    """Compare `candidate` with the torch float32 `reference` on `texts` (the fixed sample)."""
    sample = texts or AGREEMENT_SAMPLE
    got, want = candidate.encode(sample), reference.encode(sample)
    if not np.isfinite(got).all():
        got = np.nan_to_num(got, nan=0.0, posinf=0.0, neginf=0.0)
    cos = cosines(got, want)
    return Agreement(candidate.precision, len(sample), round(float(cos.mean()), 6),
                     round(float(cos.min()), 6), float(np.abs(got - want).max()),
                     min_mean_cosine, min_cosine)


@dataclass(frozen=True)
class BackendChoice:
    """The encoder a run uses, the agreement that allowed it, and why torch, if it fell back."""

    encoder: TorchEncoder | OnnxEncoder
    agreement: Agreement | None = None
    fallback_reason: str | None = None

    @property
    def backend(self) -> str:
        return self.encoder.backend


def guarded(base: TorchEncoder, cache_dir: str | None, quantize: str, min_mean_cosine: float,
            min_cosine: float, threads: int | None = None) -> BackendChoice:
    """The ONNX encoder if it agrees with `base` (torch float32), else `base`, with a warning."""
    try:
        candidate = onnx_encoder(base, cache_dir, quantize, threads)
        checked = agreement(candidate, base, min_mean_cosine, min_cosine)
    except ModelLoadError as exc:
        return fall_back(base, None, str(exc))
    if checked.passed:
        return BackendChoice(candidate, checked)
    reason = (f"{checked.precision} vectors of {base.model_id} disagree with torch float32 on "
              f"the {checked.n}-query check: mean cosine {checked.mean_cosine:.6f} (floor "
              f"{min_mean_cosine}), min {checked.min_cosine:.6f} (floor {min_cosine}); export "
              f"{candidate.path}")
    return fall_back(base, checked, reason)


def fall_back(base: TorchEncoder, checked: Agreement | None, reason: str) -> BackendChoice:
    log.warning(
        "\n%s\nEMBEDDING BACKEND FALLBACK: the ONNX backend of %s is not used; this run embeds "
        "with torch %s (recorded in the run manifest's embed facts).\nReason: %s\n%s",
        "!" * 100, base.model_id, base.dtype, reason, "!" * 100)
    return BackendChoice(base, checked, reason)
