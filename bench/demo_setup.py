"""Shared set-up of the demo benchmarks: the config of a work folder (warehouse, metastore,
output and events under `root`) and the demo logs generated into it."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pyspark.sql import SparkSession

from querylens.demo.ground_truth import write_demo_logs
from querylens.runtime.config import Config, load_config
from querylens.runtime.session import build_session


def parse_args(doc: str | None) -> argparse.Namespace:
    """`--set key=value` overrides (repeatable) and `--root` (the work folder)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--root", default=None, help="work folder (default: a temp folder)")
    return parser.parse_args()


def demo_config(root: Path, overrides: list[str]) -> Config:
    """The config of a demo run whose tables and logs live under `root`."""
    return load_config(None, [
        f"run.warehouse_dir={root / 'warehouse'}", f"run.metastore_dir={root / 'metastore'}",
        f"run.output_dir={root / 'output'}", f"input.path={root / 'events'}", *overrides,
    ])


def demo_session(root: str | None, prefix: str,
                 overrides: list[str]) -> tuple[Path, Config, SparkSession, float]:
    """The work folder (a new temp folder when `root` is None), its config, the Spark session
    and the seconds spent generating the demo logs into it."""
    folder = Path(root or tempfile.mkdtemp(prefix=prefix))
    config = demo_config(folder, overrides)
    spark = build_session(config)
    start = time.perf_counter()
    write_demo_logs(spark, config)
    return folder, config, spark, time.perf_counter() - start
