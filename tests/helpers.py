"""Builders shared by the tests: configs, fixture tables and planted embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.runtime.config import Config, load_config
from querylens.runtime.runs import Run
from querylens.runtime.specs import TABLES
from querylens.runtime.tables import append_table, write_run_table


def config_overrides(root: Path, *overrides: str) -> list[str]:
    """`--set` values of a local config whose warehouse, metastore and outputs live under
    `root`."""
    return [
        f"run.warehouse_dir={root / 'warehouse'}",
        f"run.metastore_dir={root / 'metastore'}",
        f"run.output_dir={root / 'output'}",
        "spark.shuffle_partitions=4",
        "spark.conf={spark.ui.enabled: 'false', spark.sql.adaptive.enabled: 'false'}",
        *overrides,
    ]


def make_config(root: Path, *overrides: str) -> Config:
    """Local config whose warehouse, metastore and outputs live under `root`."""
    return load_config(None, config_overrides(root, *overrides))


def with_spec_columns(df: DataFrame, table: str) -> DataFrame:
    """`df` plus null columns for whatever `table`'s spec has and the fixture leaves out."""
    present = set(df.columns)
    return df.select("*", *[F.lit(None).cast(kind).alias(name)
                            for name, kind in TABLES[table].columns if name not in present])


def write_fixture(run: Run, table: str, frame: pd.DataFrame | DataFrame) -> int:
    """Write a fixture's rows of `table` for `run`; columns it leaves out are null."""
    df = frame if isinstance(frame, DataFrame) else run.spark.createDataFrame(frame)
    rows = write_run_table(with_spec_columns(df, table), run.database, table, run.run_id)
    run.counts[table] = rows
    return rows


def plant_embeddings(run: Run, keys: list[str], vectors: np.ndarray,
                     model_id: str = "planted", revision: str = "r1") -> DataFrame:
    """Append `vectors` to the run's `query_embeddings` cache as `model_id` and record the
    embed facts later stages read; return (query_key, embedding)."""
    frame = pd.DataFrame({"query_key": keys, "embedding": list(vectors.astype(np.float32))})
    planted = run.spark.createDataFrame(frame, "query_key string, embedding array<float>")
    rows = planted.select(
        "query_key", F.lit(None).cast("string").alias("query"), F.lit(model_id).alias("model_id"),
        F.lit(revision).alias("model_revision"), F.lit(vectors.shape[1]).alias("dim"),
        "embedding", F.lit(False).alias("truncated"), F.lit("cpu/float32").alias("device"),
        F.lit(model_id).alias("requested_model"), F.lit(run.run_id).alias("embedded_run_id"),
        F.lit("planted").alias("embed_batch_id"), F.current_timestamp().alias("embedded_at"))
    append_table(rows, run.database, "query_embeddings")
    run.facts["embed"] = {"model_id": model_id, "model_revision": revision}
    run.timings.setdefault("embed", 0.0)
    return planted
