"""One session-scoped local[2] Spark with a temporary warehouse and Derby metastore."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from querylens.config import Config, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_config(root: Path, *overrides: str) -> Config:
    """Local config whose warehouse, metastore and outputs live under `root`."""
    return load_config(None, [
        f"run.warehouse_dir={root / 'warehouse'}",
        f"run.metastore_dir={root / 'metastore'}",
        f"run.output_dir={root / 'output'}",
        "spark.shuffle_partitions=4",
        "spark.conf={spark.ui.enabled: 'false', spark.sql.adaptive.enabled: 'false'}",
        *overrides,
    ])


@pytest.fixture(scope="session")
def spark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark")


@pytest.fixture(scope="session")
def config(spark_root: Path) -> Config:
    return make_config(spark_root)


@pytest.fixture(scope="session")
def spark(config: Config) -> Iterator[SparkSession]:
    from querylens.session import build_session

    session = build_session(config)
    yield session
    session.stop()
