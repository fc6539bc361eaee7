"""Command line for every job: `querylens JOB [--conf FILE] [--set k=v ...] [--run-id ID]`."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from querylens.runtime.config import Config, load_config
from querylens.runtime.errors import QuerylensError, no_space
from querylens.runtime.tables import require_run_id


def parse(job: str, argv: list[str]) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog=f"querylens {job}")
    parser.add_argument("--conf", help="YAML config file (defaults: built-in local settings)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable")
    parser.add_argument("--run-id", help="run id to write (or, for a single stage, to continue)")
    args = parser.parse_args(argv)
    if args.run_id is not None:
        require_run_id(args.run_id)
    return load_config(args.conf, args.set), args


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `querylens` console script and of every file in jobs/."""
    from querylens.app.jobs import JOBS

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in JOBS:
        names = ", ".join(sorted(JOBS))
        given = argv[0] if argv else "nothing"
        print(f"querylens: unknown job {given!r}; choose one of: {names}", file=sys.stderr)
        return 2
    return run_job(argv[0], JOBS[argv[0]], argv[1:])


def run_job(name: str, job: Callable[[Config, argparse.Namespace], None], argv: list[str]) -> int:
    """Run one job: 0 on success, 2 with one line for a `QuerylensError` or a full disk (with
    the free space of the run's folders); anything else raises with its full traceback."""
    setup_logging()
    config: Config | None = None
    try:
        config, args = parse(name, argv)
        job(config, args)
    except QuerylensError as exc:
        print(f"querylens {name}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        full = no_space(exc)
        if full is None:
            raise
        print(f"querylens {name}: error: disk full: {full}{free_space(config)}", file=sys.stderr)
        return 2
    return 0


def free_space(config: Config | None) -> str:
    """'; free space: run.warehouse_dir 0 B (/w), ...' for the run's local folders and Spark's
    scratch folder (`spark.local.dir`), each at its nearest existing parent."""
    if config is None:
        return ""
    folders = {f"run.{key}": getattr(config.run, key)
               for key in ("warehouse_dir", "output_dir", "metastore_dir")}
    folders["spark.local.dir"] = config.spark.conf.get("spark.local.dir",
                                                       tempfile.gettempdir()).split(",")[0]
    shown = []
    for key, folder in folders.items():
        path = Path(folder).resolve()
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if "://" in folder or existing is None:
            continue
        shown.append(f"{key} {shutil.disk_usage(existing).free / 2**30:.1f} GiB ({path})")
    return f"; free space: {', '.join(shown)}" if shown else ""
