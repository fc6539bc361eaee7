"""One local[2] Spark session per test process (per xdist worker) with a temporary warehouse
and Derby metastore; each test module gets a fresh database of its own (`config`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from querylens.runtime.config import Config
from querylens.runtime.runs import Run
from tests.helpers import make_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def spark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark")


@pytest.fixture(scope="session")
def spark(spark_root: Path) -> Iterator[SparkSession]:
    from querylens.runtime.session import build_session

    session = build_session(make_config(spark_root))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def config(spark: SparkSession, spark_root: Path, request: pytest.FixtureRequest) -> Config:
    """Config of this test module: its own fresh database and output folder."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])
    spark.sql(f"DROP DATABASE IF EXISTS {name} CASCADE")
    spark.sql(f"CREATE DATABASE {name}")
    return make_config(spark_root, f"run.database={name}",
                       f"run.output_dir={spark_root / 'output' / name}")


DEMO = ["generate.n_events=6000", "generate.n_queries=600", "cluster.n_clusters=6",
        "cluster.n_components=5", "cluster.sweep_components=[2,5,10]",
        "cluster.sweep_clusters=[4,6]", "cluster.stability_seeds=[7]", "success.max_epochs=20",
        "report.projection=pca", "report.map_sample=200", "report.knife_refit_sample=200"]


@pytest.fixture(scope="session")
def demo_run(spark: SparkSession, spark_root: Path) -> Run:
    """One small full pipeline run over demo logs in database `t_demo`, shared by the tests
    that only read its tables."""
    from querylens.app.pipeline import run_pipeline
    from querylens.demo.ground_truth import write_demo_logs

    config = make_config(spark_root, "run.database=t_demo", f"input.path={spark_root / 'demo'}",
                         f"run.output_dir={spark_root / 'output' / 't_demo'}", *DEMO)
    spark.sql("CREATE DATABASE IF NOT EXISTS t_demo")
    write_demo_logs(spark, config)
    run = Run.open(spark, config, "demo")
    run_pipeline(run)
    return run
