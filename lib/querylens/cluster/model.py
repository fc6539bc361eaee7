"""The fitted normaliser + PCA + KMeans as plain arrays: project, assign, save, load, match."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from querylens.runtime.arrays import normalize_rows
from querylens.runtime.errors import ModelLoadError

log = logging.getLogger("querylens")

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Projection:
    """L2 normaliser followed by PCA (centred, not whitened), all fitted components kept."""

    mean_: np.ndarray
    components_: np.ndarray
    explained_variance_ratio_: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.mean_.shape[0])

    def transform(self, X: np.ndarray, n_components: int) -> np.ndarray:
        """Rows L2-normalised (zero rows stay zero), centred and projected on `n_components`."""
        X = normalize_rows(X, np.float64)
        return (X - self.mean_) @ self.components_[:n_components].T


@dataclass(frozen=True)
class ClusterModel:
    """A projection and KMeans centroids in its first `n_components` dimensions."""

    projection: Projection
    centroids_: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return int(self.centroids_.shape[1])

    @property
    def n_clusters(self) -> int:
        return int(self.centroids_.shape[0])

    @property
    def version(self) -> int | None:
        return self.meta.get("version")

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.projection.transform(X, self.n_components)

    def sq_distances(self, Z: np.ndarray) -> np.ndarray:
        """Squared Euclidean distances of projected rows `Z` to every centroid (n x k)."""
        c = self.centroids_
        d = (Z * Z).sum(1)[:, None] - 2.0 * Z @ c.T + (c * c).sum(1)[None, :]
        return np.maximum(d, 0.0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.sq_distances(self.transform(X)).argmin(1)

    def original_centroids(self) -> np.ndarray:
        """Centroids mapped back to the normalised embedding space (comparable across fits)."""
        p = self.projection
        return self.centroids_ @ p.components_[: self.n_components] + p.mean_

    def relabel(self, order: np.ndarray) -> ClusterModel:
        """The model whose cluster `i` is this model's cluster `order[i]`."""
        return replace(self, centroids_=self.centroids_[np.asarray(order)])


def match_clusters(new: ClusterModel, previous: ClusterModel) -> np.ndarray:
    """New id of each of `new`'s clusters, reusing `previous`'s ids by nearest centroid.

    Centroids are compared in the normalised embedding space and matched one-to-one with the
    Hungarian algorithm; clusters left over (k changed) take the smallest unused ids.
    """
    if new.projection.dim != previous.projection.dim:
        raise ValueError(
            f"cannot match clusters: embedding dim {new.projection.dim} != previous "
            f"{previous.projection.dim}"
        )
    a, b = new.original_centroids(), previous.original_centroids()
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    k = new.n_clusters
    cost = cost[:, :k]
    rows, cols = linear_sum_assignment(cost)
    ids = np.full(k, -1, dtype=np.int64)
    ids[rows] = cols
    free = iter(sorted(set(range(k)) - set(cols.tolist())))
    for i in np.flatnonzero(ids < 0):
        ids[i] = next(free)
    return ids


def apply_ids(model: ClusterModel, ids: np.ndarray) -> ClusterModel:
    """Reorder centroids so that old cluster `i` becomes cluster `ids[i]`."""
    order = np.empty_like(ids)
    order[ids] = np.arange(len(ids))
    return model.relabel(order)


MODEL_FILES = ("model.npz", "meta.json")


def _numbered(model_dir: str | Path) -> list[int]:
    """Every `v<N>` folder number under `model_dir`, complete or not."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit() and p.is_dir())


def is_complete(path: Path) -> bool:
    """Whether a version folder holds every file `save_model` writes."""
    return all((path / name).is_file() for name in MODEL_FILES)


def versions(model_dir: str | Path) -> list[int]:
    """The complete saved versions under `model_dir`, oldest first; an incomplete `v<N>` folder
    (a save killed half-way by an older querylens, or damaged by hand) is skipped with a
    warning."""
    found = []
    for version in _numbered(model_dir):
        if is_complete(Path(model_dir) / f"v{version}"):
            found.append(version)
        else:
            log.warning("cluster model folder %s is incomplete (lacks %s); skipping it",
                        Path(model_dir) / f"v{version}", " or ".join(MODEL_FILES))
    return found


def save_model(model: ClusterModel, model_dir: str | Path, meta: dict[str, Any]) -> ClusterModel:
    """Write `model` as the next version under `model_dir`; return it with its version set.

    The files are written to a hidden folder beside the versions, then renamed to `v<N>` in one
    step, so a `v<N>` folder is always complete; a version number held by an incomplete folder
    is never reused.
    """
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    aside = root / f".saving-{uuid.uuid4().hex}"
    aside.mkdir()
    try:
        p = model.projection
        np.savez(aside / "model.npz", mean=p.mean_, components=p.components_,
                 explained_variance_ratio=p.explained_variance_ratio_,
                 centroids=model.centroids_)
        for _ in range(100):
            version = max(_numbered(root), default=0) + 1
            full = {**model.meta, **meta, "version": version, "format": FORMAT_VERSION,
                    "n_components": model.n_components, "n_clusters": model.n_clusters,
                    "dim": p.dim, "saved_at": datetime.now(UTC).isoformat()}
            (aside / "meta.json").write_text(
                json.dumps(full, indent=2, sort_keys=True, default=str))
            path = root / f"v{version}"
            if path.exists():
                continue
            try:
                os.rename(aside, path)
            except OSError:
                if path.exists():
                    continue  # another writer took this version number first
                raise
            return replace(model, meta=full)
        raise ModelLoadError(f"could not claim a version number under {root}")
    finally:
        if aside.exists():
            shutil.rmtree(aside, ignore_errors=True)


def load_model(model_dir: str | Path, version: int | None = None) -> ClusterModel:
    """Version `version` (the latest complete one when None) of the model saved under
    `model_dir`."""
    found = versions(model_dir)
    if version is not None and version not in found and version in _numbered(model_dir):
        raise ModelLoadError(f"cluster model version {version} under {model_dir} is incomplete "
                             f"(lacks {' or '.join(MODEL_FILES)}); complete versions: {found}")
    if not found:
        raise ModelLoadError(f"no saved cluster model under {model_dir}")
    version = found[-1] if version is None else version
    path = Path(model_dir) / f"v{version}"
    if version not in found:
        raise ModelLoadError(
            f"cluster model version {version} not found under {model_dir}: {found}")
    meta = json.loads((path / "meta.json").read_text())
    with np.load(path / "model.npz") as z:
        projection = Projection(z["mean"], z["components"], z["explained_variance_ratio"])
        return ClusterModel(projection, z["centroids"], meta)
