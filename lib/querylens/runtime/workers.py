"""Worker-side helpers: a per-Python-worker model cache, and shared objects + `mapInPandas`
(broadcasts on classic Spark, closures or files over Spark Connect)."""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from threading import Lock
from typing import Any, Generic, Protocol, TypeVar

import pandas as pd
from pyarrow.fs import FileSystem
from pyspark import cloudpickle
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

INLINE_LIMIT = 16 * 1024 * 1024

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


class Shared(Protocol[T_co]):
    """What `map_batches_with` ships: a broadcast variable, or its Spark Connect stand-ins."""

    @property
    def value(self) -> T_co: ...

    def destroy(self) -> None: ...


@dataclass(frozen=True)
class Inline(Generic[T]):
    """A small object shipped inside the UDF's closure (Spark Connect)."""

    obj: T

    @property
    def value(self) -> T:
        return self.obj

    def destroy(self) -> None:
        """Nothing to free: the object goes with the closure."""


@dataclass(frozen=True)
class SharedFile(Generic[T]):
    """A large object pickled once to a file that each Python worker loads once (Spark Connect,
    where there is no `sc.broadcast`); the folder must be one the executors can read."""

    uri: str

    @property
    def value(self) -> T:
        return _SHARED_FILES.get(self.uri, lambda: read_pickle(self.uri))

    def destroy(self) -> None:
        filesystem, path = FileSystem.from_uri(self.uri)
        filesystem.delete_file(path)


_SHARED_FILES: ModelCache[str, Any] = ModelCache(max_size=4)


def read_pickle(uri: str) -> Any:
    filesystem, path = FileSystem.from_uri(uri)
    with filesystem.open_input_stream(path) as stream:
        return pickle.loads(stream.read())


def write_pickle(folder: str, data: bytes) -> str:
    """`data` written to `folder/<sha256>.pkl` through a temporary name; returns its URI."""
    filesystem, root = FileSystem.from_uri(folder)
    filesystem.create_dir(root, recursive=True)
    name = f"{hashlib.sha256(data).hexdigest()}.pkl"
    with filesystem.open_output_stream(f"{root}/{name}.tmp") as stream:
        stream.write(data)
    filesystem.move(f"{root}/{name}.tmp", f"{root}/{name}")
    return f"{folder.rstrip('/')}/{name}"


def share(spark: SparkSession, obj: T) -> Shared[T]:
    """`obj` made readable on the executors: a broadcast on classic Spark; over Spark Connect
    the closure itself up to `INLINE_LIMIT` pickled bytes, else a file under
    `querylens.shared_dir`."""
    from querylens.runtime.session import SHARED_DIR_KEY, is_connect

    if not is_connect(spark):
        return spark.sparkContext.broadcast(obj)
    data = cloudpickle.dumps(obj)
    if len(data) <= INLINE_LIMIT:
        return Inline(obj)
    folder = spark.conf.get(SHARED_DIR_KEY, None)
    if not folder:
        raise RuntimeError(f"{len(data):,} pickled bytes to share over Spark Connect but no "
                           f"{SHARED_DIR_KEY} set")
    return SharedFile(write_pickle(folder, data))


def map_batches_with(
    df: DataFrame, obj: T, fn: BatchFunction[T], schema: StructType | str
) -> tuple[DataFrame, Shared[T]]:
    """`df.mapInPandas` with `fn(obj, batches)`, `obj` shipped once (see `share`).

    `fn` runs on the executors, once per partition, with the shared value read there; it must
    yield pandas frames matching `schema`. The shared handle is returned so that the caller can
    `destroy()` it once no action on the result remains to run.
    """
    shared = share(df.sparkSession, obj)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from fn(shared.value, batches)

    return df.mapInPandas(run, schema), shared
