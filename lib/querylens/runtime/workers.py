"""Worker-side helpers: a per-Python-worker model cache, and broadcast + `mapInPandas`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from threading import Lock
from typing import Generic, TypeVar

import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql.types import StructType

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

BatchFunction = Callable[[T, Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]


class ModelCache(Generic[K, V]):
    """Least-recently-used cache of loaded models, one per Python worker process, in the style
    of `pyspark.ml.model_cache.ModelCache`.

    Kept at module level it lives as long as the worker; with `spark.python.worker.reuse`
    (the default) later tasks of the same worker find their model already loaded.
    """

    def __init__(self, max_size: int = 3) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.max_size = max_size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = Lock()

    def get(self, key: K, loader: Callable[[], V]) -> V:
        """The object cached under `key`, else `loader()`, stored and returned; storing past
        `max_size` evicts the least recently used entry."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = loader()
            self._items[key] = value
            if len(self._items) > self.max_size:
                self._items.popitem(last=False)
            return value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def clear(self) -> None:
        """Drop every cached object."""
        with self._lock:
            self._items.clear()


def map_batches_with(
    df: DataFrame, obj: T, fn: BatchFunction[T], schema: StructType | str
) -> tuple[DataFrame, Broadcast[T]]:
    """`df.mapInPandas` with `fn(obj, batches)`, `obj` shipped once as a broadcast variable.

    `fn` runs on the executors, once per partition, with the broadcast's value read there; it
    must yield pandas frames matching `schema`. The broadcast is returned so that the caller can
    `destroy()` it once no action on the result remains to run.
    """
    shared = df.sparkSession.sparkContext.broadcast(obj)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from fn(shared.value, batches)

    return df.mapInPandas(run, schema), shared
