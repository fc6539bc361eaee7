"""Command line for every job: `querylens JOB [--conf FILE] [--set k=v ...] [--run-id ID]`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from querylens.runtime.config import Config, load_config
from querylens.runtime.errors import QuerylensError
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
    """Run one job: 0 on success, 2 with one line for a `QuerylensError`; anything else raises
    with its full traceback."""
    setup_logging()
    try:
        config, args = parse(name, argv)
        job(config, args)
    except QuerylensError as exc:
        print(f"querylens {name}: error: {exc}", file=sys.stderr)
        return 2
    return 0
