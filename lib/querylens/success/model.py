"""The success model: a torch MLP over query embeddings, trained on the driver or with
TorchDistributor, scored in an iterator pandas UDF and exposed as a `pyspark.ml` Transformer."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from querylens.runtime.faults import maybe_fail
from querylens.runtime.workers import ModelCache

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"


class Standardize(nn.Module):
    """Subtract the training mean and divide by the training scale (fixed buffers)."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


def build_net(n_features: int, hidden_sizes: list[int], dropout: float) -> nn.Sequential:
    """Standardize -> [Linear -> ReLU -> Dropout]* -> Linear(1) logit."""
    layers: list[nn.Module] = [Standardize(torch.zeros(n_features), torch.ones(n_features))]
    width = n_features
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def class_weights(y: np.ndarray, mode: str | None) -> tuple[float, float]:
    """(negative, positive) sample weights: 'balanced' as in sklearn, else (1, 1)."""
    if mode != "balanced":
        return 1.0, 1.0
    n, pos = len(y), float(y.sum())
    return n / (2.0 * (n - pos)), n / (2.0 * pos)


def weighted_bce(
    logits: torch.Tensor, y: torch.Tensor, weights: tuple[float, float]
) -> torch.Tensor:
    """Binary cross-entropy on logits, each example weighted by its class weight."""
    w = torch.where(y > 0.5, weights[1], weights[0])
    loss = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (loss * w).sum() / w.sum()


def train_net(data: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Train with Adam and early stopping on weighted validation loss; best state and history.

    Inside a torchrun process group (WORLD_SIZE > 1) the model is wrapped in DDP, each rank
    takes every world_size-th example of the epoch's permutation, and the validation loss is
    averaged across ranks so every rank stops at the same epoch with the same weights.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    rank = 0
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank = dist.get_rank()
    if params.get("n_threads"):
        torch.set_num_threads(params["n_threads"])
    torch.manual_seed(params["random_state"])
    x_train = torch.from_numpy(np.ascontiguousarray(data["x_train"], dtype=np.float32))
    y_train = torch.from_numpy(np.asarray(data["y_train"], dtype=np.float32))
    x_val = torch.from_numpy(np.ascontiguousarray(data["x_val"], dtype=np.float32))
    y_val = torch.from_numpy(np.asarray(data["y_val"], dtype=np.float32))
    net = build_net(x_train.shape[1], params["hidden_sizes"], params["dropout"])
    mean = x_train.mean(0)
    scale = x_train.std(0).clamp_min(1e-6)
    standardize = net[0]
    assert isinstance(standardize, Standardize)
    standardize.mean.copy_(mean)
    standardize.scale.copy_(scale)
    model: nn.Module = net
    if distributed:
        model = nn.parallel.DistributedDataParallel(net)
    weights = class_weights(data["y_train"], params["class_weight"])
    optimizer = torch.optim.Adam(model.parameters(), lr=params["learning_rate"],
                                 weight_decay=params["weight_decay"])
    best_loss, best_state, best_epoch, wait = float("inf"), copy.deepcopy(net.state_dict()), 0, 0
    history: list[dict[str, float]] = []
    batch = params["batch_size"]
    for epoch in range(1, params["max_epochs"] + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(
            params["random_state"] + epoch))[rank::world]
        train_loss = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            optimizer.zero_grad()
            loss = weighted_bce(model(x_train[idx]).squeeze(1), y_train[idx], weights)
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            val = weighted_bce(net(x_val).squeeze(1), y_val, weights).reshape(1)
        if distributed:
            dist.all_reduce(val)
            val /= world
        val_loss = float(val)
        history.append({"epoch": epoch, "train_loss": train_loss / max(len(order), 1),
                        "val_loss": val_loss})
        if val_loss < best_loss - 1e-6:
            best_loss, best_state, best_epoch, wait = (
                val_loss, copy.deepcopy(net.state_dict()), epoch, 0)
        else:
            wait += 1
            if wait >= params["patience"]:
                break
    if distributed:
        dist.destroy_process_group()
    return {"state": {k: v.detach().cpu() for k, v in best_state.items()},
            "history": history, "best_epoch": best_epoch, "world_size": world}


def distributor_train(data_path: str, params: dict[str, Any]) -> dict[str, Any]:
    """TorchDistributor entry point: load the arrays saved at `data_path` and train."""
    with np.load(data_path) as arrays:
        data = {k: arrays[k] for k in arrays.files}
    return train_net(data, params)


class SuccessMLP(ClassifierMixin, BaseEstimator):
    """MLP classifier of P(success) from query features (embedding [+ cluster features]).

    `fit` splits `validation_fraction` off for early stopping unless `X_val`/`y_val` are given.
    `backend="distributor"` trains through `pyspark.ml.torch.distributor.TorchDistributor`
    (needs an active SparkSession) with `num_processes` processes; `local_mode` runs them on the
    driver host, otherwise as Spark tasks (then `work_dir` must be storage every node can read).
    """

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] | list[int] = (64,),
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 5,
        validation_fraction: float = 0.15,
        class_weight: str | None = "balanced",
        backend: str = "driver",
        num_processes: int = 1,
        local_mode: bool = True,
        use_gpu: bool = False,
        work_dir: str | None = None,
        n_threads: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.backend = backend
        self.num_processes = num_processes
        self.local_mode = local_mode
        self.use_gpu = use_gpu
        self.work_dir = work_dir
        self.n_threads = n_threads
        self.random_state = random_state

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> SuccessMLP:
        """Train on (X, y); early stopping on (X_val, y_val) or a seeded validation split."""
        X, y = check_xy(X, y)
        if X_val is None or y_val is None:
            X, y, X_val, y_val = validation_split(X, y, self.validation_fraction,
                                                  self.random_state)
        else:
            X_val, y_val = check_xy(X_val, y_val, n_features=X.shape[1], require_both=False)
        params = self.train_params()
        data = {"x_train": X, "y_train": y, "x_val": X_val, "y_val": y_val}
        if self.backend == "driver":
            result = train_net(data, params)
        elif self.backend == "distributor":
            result = self.fit_distributed(data, params)
        else:
            raise ValueError(f"backend must be 'driver' or 'distributor', got {self.backend!r}")
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.array([0, 1])
        self.net_ = build_net(X.shape[1], list(self.hidden_sizes), self.dropout)
        self.net_.load_state_dict(result["state"])
        self.net_.eval()
        self.history_ = result["history"]
        self.best_epoch_ = result["best_epoch"]
        self.world_size_ = result["world_size"]
        self.version_ = model_version(self.net_)
        return self

    def train_params(self) -> dict[str, Any]:
        return {"hidden_sizes": list(self.hidden_sizes), "dropout": self.dropout,
                "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "max_epochs": self.max_epochs,
                "patience": self.patience, "class_weight": self.class_weight,
                "random_state": self.random_state, "n_threads": self.n_threads}

    def fit_distributed(self, data: dict[str, np.ndarray], params: dict[str, Any]) -> dict:
        from pyspark.ml.torch.distributor import TorchDistributor

        with tempfile.TemporaryDirectory(dir=self.work_dir) as folder:
            path = os.path.join(folder, "train.npz")
            np.savez(path, x_train=data["x_train"], y_train=data["y_train"],
                     x_val=data["x_val"], y_val=data["y_val"])
            distributor = TorchDistributor(num_processes=self.num_processes,
                                           local_mode=self.local_mode, use_gpu=self.use_gpu)
            result = distributor.run(distributor_train, path, params)
        if not result:
            raise RuntimeError("TorchDistributor returned no result from training")
        return result

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits of P(success)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have shape (n, {self.n_features_in_}), got {X.shape}")
        with torch.no_grad():
            return self.net_(torch.from_numpy(X)).squeeze(1).double().numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) >= 0).astype(np.int64)

    def to_bytes(self) -> bytes:
        """The fitted network, its hyperparameters and version, as torch-serialised bytes."""
        buffer = io.BytesIO()
        torch.save({"format": FORMAT_VERSION, "state": self.net_.state_dict(),
                    "params": {**self.train_params(), "n_features": int(self.n_features_in_)},
                    "version": self.version_, "best_epoch": int(self.best_epoch_)}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> SuccessMLP:
        saved = torch.load(io.BytesIO(blob), weights_only=True)
        if saved.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported success model format {saved.get('format')!r}")
        p = saved["params"]
        model = cls(hidden_sizes=tuple(p["hidden_sizes"]), dropout=p["dropout"],
                    learning_rate=p["learning_rate"], weight_decay=p["weight_decay"],
                    batch_size=p["batch_size"], max_epochs=p["max_epochs"],
                    patience=p["patience"], class_weight=p["class_weight"],
                    random_state=p["random_state"])
        model.n_features_in_ = p["n_features"]
        model.classes_ = np.array([0, 1])
        model.net_ = build_net(p["n_features"], list(p["hidden_sizes"]), p["dropout"])
        model.net_.load_state_dict(saved["state"])
        model.net_.eval()
        model.best_epoch_ = saved["best_epoch"]
        model.version_ = saved["version"]
        return model

    def save(self, folder: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write `model.pt` and `metadata.json` under `folder/<version>`; return that folder."""
        target = Path(folder) / self.version_
        target.mkdir(parents=True, exist_ok=True)
        (target / MODEL_FILE).write_bytes(self.to_bytes())
        info = {"version": self.version_, "torch": torch.__version__,
                "best_epoch": int(self.best_epoch_), "params": self.train_params(),
                "n_features": int(self.n_features_in_), **(metadata or {})}
        (target / METADATA_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
        return target

    @classmethod
    def load(cls, folder: str | Path) -> SuccessMLP:
        path = Path(folder) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no success model at {path}")
        return cls.from_bytes(path.read_bytes())


def model_version(net: nn.Module) -> str:
    """`mlp-` + the first 12 hex digits of a SHA-256 of the weights."""
    digest = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    return "mlp-" + digest.hexdigest()[:12]


def check_xy(X: Any, y: Any, n_features: int | None = None,
             require_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).astype(np.float32).ravel()
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be 2-d with one row per label; got X {X.shape}, y {y.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"validation X has {X.shape[1]} features, training X {n_features}")
    if not np.isfinite(X).all():
        raise ValueError("X holds NaN or infinite values")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must be binary (0/1 or False/True)")
    if require_both and len(np.unique(y)) < 2:
        raise ValueError(f"y holds a single class ({int(y[0]) if len(y) else 'empty'}); "
                         "a success model needs successes and failures")
    return X, y


def validation_split(X: np.ndarray, y: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded stratified split off `fraction` of the rows for early stopping."""
    from sklearn.model_selection import train_test_split

    x_tr, x_va, y_tr, y_va = train_test_split(X, y, test_size=fraction, random_state=seed,
                                              stratify=y)
    return x_tr, y_tr, x_va, y_va


MODELS: ModelCache[str, SuccessMLP] = ModelCache(max_size=3)


def worker_model(version: str, blob: bytes) -> SuccessMLP:
    """The model `version`, deserialised on first use in this Python worker."""

    def load() -> SuccessMLP:
        torch.set_num_threads(1)
        return SuccessMLP.from_bytes(blob)

    return MODELS.get(version, load)


def features(embedding: pd.Series, extra: list[pd.Series]) -> np.ndarray:
    """Stack an embedding Series (and extra numeric Series) into a float32 matrix."""
    x = np.vstack(embedding.to_numpy()).astype(np.float32)
    if extra:
        x = np.column_stack([x, *[e.to_numpy(dtype=np.float32) for e in extra]])
    return x


def score_column(model: SuccessMLP, embedding: Column, *extra: Column,
                 batch_size: int = 4096) -> Column:
    """A double column of P(success); the model ships as bytes, loaded once per worker."""
    blob, version = model.to_bytes(), model.version_

    @pandas_udf("double")  # type: ignore[call-overload]
    def score(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        maybe_fail("score")
        net = worker_model(version, blob)
        for columns in batches:
            emb, *others = columns if isinstance(columns, tuple) else (columns,)
            if len(emb) == 0:
                yield pd.Series([], dtype="float64")
                continue
            out = []
            for start in range(0, len(emb), batch_size):
                x = features(emb.iloc[start:start + batch_size],
                             [o.iloc[start:start + batch_size] for o in others])
                out.append(net.predict_proba(x)[:, 1])
            yield pd.Series(np.concatenate(out))

    return score(embedding, *extra)


class SuccessScorer(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable,
                    DefaultParamsWritable):
    """`pyspark.ml` Transformer adding P(success) from a saved SuccessMLP folder.

    `inputCol` holds the embedding (array<float>); `extraCols` the extra numeric features the
    model was trained with, in order (e.g. the cluster's success rate).
    """

    modelPath: Param[str] = Param(Params._dummy(), "modelPath", "folder of a saved SuccessMLP",
                                  typeConverter=TypeConverters.toString)
    extraCols: Param[list[str]] = Param(Params._dummy(), "extraCols",
                                        "extra feature columns, in training order",
                                        typeConverter=TypeConverters.toListString)
    batchSize: Param[int] = Param(Params._dummy(), "batchSize", "rows per forward pass",
                                  typeConverter=TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, modelPath: str | None = None, inputCol: str = "embedding",
                 outputCol: str = "p_success", extraCols: list[str] | None = None,
                 batchSize: int = 4096) -> None:
        super().__init__()
        self._setDefault(inputCol="embedding", outputCol="p_success", extraCols=[],
                         batchSize=4096)
        self._set(**self._input_kwargs)  # type: ignore[attr-defined]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        if not self.isDefined(self.modelPath):
            raise ValueError("SuccessScorer needs modelPath")
        model = SuccessMLP.load(self.getOrDefault(self.modelPath))
        extra = self.getOrDefault(self.extraCols)
        for name in [self.getInputCol(), *extra]:
            if name not in dataset.columns:
                raise ValueError(f"SuccessScorer input lacks column {name}")
        expected = model.n_features_in_ - len(extra)
        column = score_column(model, F.col(self.getInputCol()),
                              *[F.col(c).cast("double") for c in extra],
                              batch_size=self.getOrDefault(self.batchSize))
        return dataset.withColumn(self.getOutputCol(), column).withMetadata(
            self.getOutputCol(), {"model_version": model.version_, "embedding_dim": expected})
