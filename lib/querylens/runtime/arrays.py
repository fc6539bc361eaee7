"""Embedding arrays between Spark, pandas and numpy: one copy of each conversion."""

from __future__ import annotations

from typing import cast

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from querylens.runtime.errors import DataError


def normalize_rows(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows scaled to unit L2 norm in `dtype` (zero rows stay zero)."""
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def stack_rows(series: pd.Series, dtype: type = np.float32) -> np.ndarray:
    """A pandas column of equal-length arrays as one (n, d) matrix of `dtype`."""
    if not len(series):
        return np.empty((0, 0), dtype=dtype)
    return np.stack(series.to_numpy()).astype(dtype, copy=False)


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """`df.toPandas()`, typed."""
    return cast(pd.DataFrame, df.toPandas())


def with_matrix(df: DataFrame, column: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Collect `df` through Arrow: its other columns as pandas and the array column `column`
    as one float32 matrix (no Python object per row)."""
    table = df.toArrow()
    values = table.column(column).combine_chunks()
    if values.null_count:
        raise DataError(f"column {column} holds {values.null_count} null arrays")
    lengths = values.value_lengths().to_numpy()
    if len(lengths) and lengths.min() != lengths.max():
        raise DataError(f"column {column} holds arrays of different lengths")
    dim = int(lengths[0]) if len(lengths) else 0
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table.drop_columns([column]).to_pandas(), flat.reshape(len(table), dim)
