"""The querylens models as MLflow pyfunc models: load with `mlflow.pyfunc.load_model(uri)` and
score a pandas frame with an `embedding` column (one float array per query).

* `success`: P(success) as a `p_success` column; the frame also holds the model's extra
  features in training order (`cluster_success_rate`, the query cluster's training success
  rate, when the model was trained with `success.cluster_features`), as `SuccessScorer` takes.
* `cluster`: the nearest centroid's id as a `cluster_id` column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from querylens.cluster.model import ClusterModel, load_model
from querylens.success.model import METADATA_FILE, SuccessMLP, features

KINDS = ("success", "cluster")


def success_features(folder: str | Path) -> list[str]:
    """The input columns of a saved success model, in training order."""
    meta = json.loads((Path(folder) / METADATA_FILE).read_text())
    return list(meta.get("features", ["embedding"]))


def input_example(kind: str, folder: str | Path) -> pd.DataFrame:
    """One all-zero input row of the saved `kind` model in `folder` (its columns and width)."""
    if kind == "cluster":
        columns, dim = ["embedding"], cluster_model_at(folder).projection.dim
    else:
        meta = json.loads((Path(folder) / METADATA_FILE).read_text())
        columns = success_features(folder)
        dim = int(meta["n_features"]) - len(columns) + 1
    row: dict[str, list[Any]] = {"embedding": [np.zeros(dim, dtype=np.float32)]}
    row.update({name: [0.0] for name in columns[1:]})
    return pd.DataFrame(row)


def cluster_model_at(folder: str | Path) -> ClusterModel:
    """The cluster model saved in the version folder `folder` (`.../v<N>`)."""
    path = Path(folder)
    return load_model(path.parent, int(path.name.removeprefix("v")))


def require_columns(frame: pd.DataFrame, columns: list[str], kind: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the {kind} model's input frame lacks column(s) {missing}; "
                         f"it needs {columns}")


class QuerylensModel(PythonModel):  # type: ignore[misc]
    """One of `KINDS`: the logged model's one artifact, named by its kind, is the saved model
    folder."""

    def load_context(self, context: Any) -> None:
        kinds = [k for k in KINDS if k in context.artifacts]
        if len(kinds) != 1:
            raise ValueError(f"a querylens model has one artifact named {' or '.join(KINDS)}, "
                             f"got {sorted(context.artifacts)}")
        self.kind = kinds[0]
        folder = context.artifacts[self.kind]
        if self.kind == "success":
            self.success = SuccessMLP.load(folder)
            self.columns = success_features(folder)
        else:
            self.cluster = cluster_model_at(folder)
            self.columns = ["embedding"]

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        require_columns(frame, self.columns, self.kind)
        x = features(frame["embedding"], [frame[c] for c in self.columns[1:]])
        if self.kind == "success":
            return pd.DataFrame({"p_success": self.success.predict_proba(x)[:, 1]})
        ids = self.cluster.predict(x.astype(np.float64))
        return pd.DataFrame({"cluster_id": ids.astype(np.int64)})
