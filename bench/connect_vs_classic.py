"""The pipeline's wall time over Spark Connect vs classic Spark on the same demo logs.

One run each, one after the other in this process's machine: the demo logs are generated once
(classic), then `jobs/pipeline.py` runs as a classic local-mode job and as a Connect client of a
server started on loopback with the same settings. Each side has its own warehouse, metastore
and embedding cache, so both embed from scratch.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/python bench/connect_vs_classic.py \
        --events 20000 --queries 2000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from querylens.deploy.connect_server import local_connect_server  # noqa: E402
from querylens.runtime.config import load_config  # noqa: E402


def job(name: str, sets: list[str], *args: str) -> float:
    """Run `jobs/<name>.py` with `--set` values; its wall time in seconds."""
    command = [sys.executable, str(ROOT / "jobs" / f"{name}.py"), *args]
    for value in sets:
        command += ["--set", value]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def side(root: Path, events: Path, extra: list[str]) -> list[str]:
    return [f"run.warehouse_dir={root / 'warehouse'}", f"run.metastore_dir={root / 'metastore'}",
            f"run.output_dir={root / 'output'}", f"input.path={events}", *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ql-connect-bench-"))
    common = [f"generate.n_events={args.events}", f"generate.n_queries={args.queries}"]
    events = work / "events"
    classic = side(work / "classic", events, common)
    job("generate_logs", classic)
    classic_s = job("pipeline", classic, "--run-id", "bench")
    remote = side(work / "connect", events, common)
    started = time.perf_counter()
    with local_connect_server(load_config(None, remote), work / "logs") as url:
        server_s = time.perf_counter() - started
        connect_s = job("pipeline", [*remote, f"spark.remote={url}"], "--run-id", "bench")
    print(f"| {args.events:,} events, {args.queries:,} queries | classic {classic_s:.0f} s | "
          f"Connect {connect_s:.0f} s (server start {server_s:.0f} s) | "
          f"ratio {connect_s / classic_s:.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
