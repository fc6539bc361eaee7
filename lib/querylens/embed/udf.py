"""Embedding as an iterator pandas UDF, in the style of `pyspark.ml.functions.predict_batch_udf`.

The model is loaded once per Python worker (and reused by later tasks of a reused worker) on the
GPU Spark assigned to the task, else CUDA if present, else the CPU, with torch (or ONNX Runtime,
with `backend` onnx or auto on a CPU) limited to the task's cores. Null, empty and
whitespace-only texts get a null embedding.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql.functions import pandas_udf

from querylens.embed.encoders import Encoded, Encoder, load_encoder, resolve_device, task_cpus
from querylens.embed.onnx import BackendChoice, guarded, onnx_encoder
from querylens.runtime.config import EmbedConfig
from querylens.runtime.errors import ModelLoadError
from querylens.runtime.faults import maybe_fail
from querylens.runtime.provenance import note_task, task_probe
from querylens.runtime.text import is_blank_text
from querylens.runtime.workers import ModelCache

EMBED_STRUCT = "embedding array<float>, truncated boolean, device string"


@dataclass(frozen=True)
class EncoderSettings:
    """Everything that identifies a loaded encoder in a worker."""

    model: str
    device: str = "auto"
    normalize: bool = True
    batch_size: int = 256
    dtype: str = "auto"
    cuda_graphs: bool = False
    backend: str = "torch"
    quantize: str = "none"
    onnx_dir: str | None = None
    min_mean_cosine: float = 0.999
    min_cosine: float = 0.99
    guard: bool = True

    @classmethod
    def from_config(cls, config: EmbedConfig, model: str | None = None) -> EncoderSettings:
        return cls(model or config.model, config.device, config.normalize, config.batch_size,
                   config.dtype, config.cuda_graphs, config.backend, config.quantize,
                   config.onnx_dir, config.agreement_min_mean_cosine,
                   config.agreement_min_cosine)


ENCODERS: ModelCache[EncoderSettings, Encoder] = ModelCache(max_size=4)


def backend_for(backend: str, device: str) -> str:
    """`torch` or `onnx` on `device`: auto is ONNX on a CPU, torch on a GPU; ONNX is CPU-only."""
    if backend not in ("torch", "onnx", "auto"):
        raise ValueError(f"embed.backend must be torch, onnx or auto, got {backend!r}")
    gpu = device.startswith("cuda")
    if backend == "onnx" and gpu:
        raise ModelLoadError(f"embed.backend 'onnx' runs on the CPU, but the tasks use {device}; "
                             "set embed.backend to auto or torch, or embed.device to cpu")
    return "torch" if backend == "torch" or (backend == "auto" and gpu) else "onnx"


def load_backend(settings: EncoderSettings, device: str) -> BackendChoice:
    """The encoder `settings` ask for on `device`; ONNX is checked against torch float32 unless
    `settings.guard` is off (the driver already checked it)."""
    s = settings
    if backend_for(s.backend, device) == "torch":
        return BackendChoice(load_encoder(s.model, device, s.normalize, s.batch_size, s.dtype,
                                          s.cuda_graphs))
    base = load_encoder(s.model, "cpu", s.normalize, s.batch_size, "float32")
    if not s.guard:
        return BackendChoice(onnx_encoder(base, s.onnx_dir, s.quantize))
    return guarded(base, s.onnx_dir, s.quantize, s.min_mean_cosine, s.min_cosine)


def worker_encoder(settings: EncoderSettings) -> Encoder:
    """The encoder for `settings` on this task's device, loaded on first use in this process."""
    key = replace(settings, device=resolve_device(settings.device))
    return ENCODERS.get(key, lambda: load_backend(key, key.device).encoder)


def use_task_cores() -> None:
    """Limit torch's intra-op threads to the cores Spark gave this task (ONNX Runtime sessions
    take the same count when they are created)."""
    import torch

    cpus = task_cpus()
    if cpus is not None and torch.get_num_threads() != cpus:
        torch.set_num_threads(cpus)


def present(texts: pd.Series) -> np.ndarray:
    """True where a text is a string with something other than whitespace."""
    return np.fromiter((not is_blank_text(t) for t in texts), dtype=bool, count=len(texts))


def to_frame(encoded: Encoded, mask: np.ndarray, label: str) -> pd.DataFrame:
    """The UDF's output rows: null where the input was skipped."""
    embeddings = np.empty(len(mask), dtype=object)
    truncated = np.full(len(mask), None, dtype=object)
    for row, vector, cut in zip(np.flatnonzero(mask), encoded.vectors, encoded.truncated,
                                strict=True):
        embeddings[row] = vector
        truncated[row] = bool(cut)
    device = np.full(len(mask), None, dtype=object)
    device[mask] = label
    return pd.DataFrame({"embedding": embeddings, "truncated": truncated, "device": device})


def encode_series(encoder: Encoder, batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
    """Encode a stream of pandas batches, tokenizing ahead where the encoder can."""
    masks: deque[np.ndarray] = deque()

    def texts() -> Iterator[list[str]]:
        for batch in batches:
            mask = present(batch)
            masks.append(mask)
            yield [t for t, keep in zip(batch.tolist(), mask, strict=True) if keep]

    label = f"{encoder.device}/{encoder.precision}"
    for encoded in encoder.encode_batches(texts()):
        yield to_frame(encoded, masks.popleft(), label)


def embed_struct_column(texts: Column, settings: EncoderSettings) -> Column:
    """A `struct<embedding array<float>, truncated boolean, device string>` column."""
    probe = task_probe()

    @pandas_udf(EMBED_STRUCT)  # type: ignore[call-overload]
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        maybe_fail("embed")
        note_task(probe)
        use_task_cores()
        yield from encode_series(worker_encoder(settings), batches)

    return embed(texts)


def embed_column(
    texts: Column, model: str, device: str = "auto", normalize: bool = True,
    batch_size: int = 256, dtype: str = "auto", cuda_graphs: bool = False,
    backend: str = "torch", quantize: str = "none",
) -> Column:
    """An `array<float>` column of embeddings of `texts` (null for null or blank texts); with
    `backend` onnx or auto, each worker checks the ONNX vectors against torch when it loads."""
    settings = EncoderSettings(model, device, normalize, batch_size, dtype, cuda_graphs, backend,
                               quantize)
    return embed_struct_column(texts, settings).getField("embedding")
