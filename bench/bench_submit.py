"""Time spark-submit.sh: packing the environment, building the package, and a real submit.

    .venv/bin/python bench/bench_submit.py [--repeats 3] [--skip-cold]

Cold pack/build run into a temporary folder; the submits use the real cache (build/spark-submit)
and run the `ingest` job on 3,000 demo
events against a standalone master + worker on loopback (the same as tests/test_cluster_submit),
once with a cold cache and `--repeats` times with a warm one. Prints Markdown for
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]

from tests.test_cluster_submit import standalone_cluster, write_events  # noqa: E402

from querylens.deploy import submit  # noqa: E402


def tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def submit_once(master: str, work: Path, build: Path, run: int) -> tuple[float, float, int]:
    """(prepare seconds, total seconds, exit code) of one `spark-submit.sh ingest`."""
    root = work / f"run{run}"
    args = [str(ROOT / "spark-submit.sh"), "ingest", "--master", master,
            "--set", f"input.path={work / 'events'}",
            "--set", f"run.warehouse_dir={root / 'warehouse'}",
            "--set", f"run.metastore_dir={root / 'metastore'}",
            "--set", "spark.conf={spark.ui.enabled: 'false'}",
            "--", "--conf", f"spark.local.dir={root / 'local'}"]
    env = {**os.environ, "QUERYLENS_BUILD_DIR": str(build), "SPARK_LOCAL_IP": "127.0.0.1"}
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    total = time.perf_counter() - start
    prepare = next((float(line.split("prepare ")[1].split("s,")[0])
                    for line in done.stdout.splitlines() if "prepare " in line), float("nan"))
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
    return prepare, total, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold pack timings")
    args = parser.parse_args()
    venv = Path(sys.prefix)
    rows = [f"machine: {platform.node()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; venv {venv} {tree_size(venv) / 2**30:.2f} GiB on disk",
            "", "| step | seconds | size |", "| --- | ---: | ---: |"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build = work / "build"
        if not args.skip_cold:
            for level in (1, 0):
                packed = submit.pack_env(venv, work / f"pack{level}", compress=level)
                kind = f"gzip level {level}" if level else "plain tar"
                rows.append(f"| pack environment, cold ({kind}) | {packed.seconds:.1f} | "
                            f"{packed.path.stat().st_size / 2**20:,.0f} MiB |")
                packed.path.unlink()
        start = time.perf_counter()
        cached = submit.pack_env(venv, ROOT / "build" / "spark-submit", compress=1)
        rows.append(f"| pack environment, cached (hash check) | "
                    f"{time.perf_counter() - start:.2f} | {'hit' if cached.cached else 'miss'} |")
        package = submit.build_package(ROOT, build)
        rows.append(f"| build querylens wheel + zip, cold | {package.seconds:.1f} | "
                    f"{package.path.stat().st_size / 2**10:,.0f} KiB |")
        again = submit.build_package(ROOT, build)
        rows.append(f"| build querylens wheel + zip, cached | {again.seconds:.2f} | hit |")
        write_events(work / "events")
        with standalone_cluster(work / "spark") as master:
            totals, prepares = [], []
            for run in range(args.repeats):
                prepare, total, rc = submit_once(master, work, cached.path.parent, run)
                if rc:
                    raise SystemExit(f"submit {run} failed with exit code {rc}")
                prepares.append(prepare)
                totals.append(total)
        rows.append(f"| spark-submit.sh ingest, prepare (checks + cached artefacts), median of "
                    f"{args.repeats} | {statistics.median(prepares):.1f} | |")
        rows.append(f"| spark-submit.sh ingest on the standalone cluster, end to end, median of "
                    f"{args.repeats} | {statistics.median(totals):.1f} | |")
        rows.append(f"| (each run: {', '.join(f'{t:.1f}' for t in totals)} s) | | |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
