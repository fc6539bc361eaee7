"""The whole pipeline's cost curve: generate demo logs, then `pipeline` (ingest, embed, cluster
with the default sweep, success, recommend, report), each as its own job process, at several
sizes; per stage time, peak memory of the job's process tree (Python driver and JVM) and rows
per table, from the run's own `runs` row.

    .venv/bin/python bench/pipeline_scale.py --events 200000 2000000 [--queries-per-event 0.06]
        [--data-dir /tmp/ql_pipeline] [--out bench/results/pipeline_scale.json] [--plot FILE]
        [--write] [--resume]

Each size gets its own warehouse under --data-dir. `generate.n_queries` (the demo vocabulary)
is `--queries-per-event` x events unless --fixed-queries is given, so distinct queries grow with
the logs as in a shop whose long tail grows with traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from docs_section import write_section

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- pipeline-scale:begin -->", "<!-- pipeline-scale:end -->"
STAGES = ["ingest", "embed", "cluster", "success", "recommend", "report"]


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and every descendant process."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status if ":" in line)
        pid, ppid = int(entry.name), int(fields.get("PPid", "0").strip())
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_job(args: list[str], log: Path) -> tuple[float, int]:
    """Run one job process; its wall seconds and the peak RSS of its process tree."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    peak = 0
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss(proc.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    if code:
        raise SystemExit(f"{' '.join(args)} failed with exit code {code}; see {log}")
    return time.perf_counter() - start, peak


def run_row(warehouse: Path, database: str) -> dict[str, Any]:
    """The newest completed row of the `runs` table, read from its Parquet files."""
    runs = pd.read_parquet(warehouse / f"{database}.db" / "runs")
    done = runs[runs["status"] == "completed"].sort_values("finished_at")
    if done.empty:
        raise SystemExit(f"no completed run in {warehouse}")
    return done.iloc[-1].to_dict()


def measure(events: int, n_queries: int, root: Path, conf: str) -> dict[str, Any]:
    """Generate `events` demo events and run the pipeline over them in fresh job processes."""
    folder = root / f"events_{events}"
    database = "bench"
    settings = [
        f"run.warehouse_dir={folder / 'warehouse'}", f"run.metastore_dir={folder / 'metastore'}",
        f"run.output_dir={folder / 'output'}", f"run.database={database}",
        f"input.path={folder / 'logs'}", f"generate.n_events={events}",
        f"generate.n_queries={n_queries}",
    ]
    overrides = [part for s in settings for part in ("--set", s)]
    folder.mkdir(parents=True, exist_ok=True)
    generate_s, generate_peak = run_job(["jobs/generate_logs.py", "--conf", conf, *overrides],
                                        folder / "generate.log")
    pipeline_s, pipeline_peak = run_job(["jobs/pipeline.py", "--conf", conf, *overrides],
                                        folder / "pipeline.log")
    row = run_row(folder / "warehouse", database)
    facts = json.loads(row["facts_json"] or "{}")
    return {
        "events": events, "generate_n_queries": n_queries,
        "distinct_queries": facts.get("ingest", {}).get("queries"),
        "generate_s": round(generate_s, 1), "pipeline_s": round(pipeline_s, 1),
        "stage_s": json.loads(row["timings_json"] or "{}"),
        "rows": json.loads(row["counts_json"] or "{}"),
        "peak_gb": {"generate": round(generate_peak / 2**30, 2),
                    "pipeline": round(pipeline_peak / 2**30, 2)},
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Log-log time per stage against events and against distinct queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = sorted({s for r in results for s in r["stage_s"]})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, x_key, x_label in ((axes[0], "events", "events"),
                               (axes[1], "distinct_queries", "distinct queries")):
        xs = [r[x_key] for r in results]
        for stage in stages:
            ax.plot(xs, [r["stage_s"].get(stage) for r in results], marker="o", label=stage)
        ax.plot(xs, [r["pipeline_s"] for r in results], marker="s", color="black",
                label="pipeline job (wall)")
        ax.set(xscale="log", yscale="log", xlabel=x_label, ylabel="seconds")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"querylens pipeline cost, {platform.node()} ({os.cpu_count()} cpus)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def growth(results: list[dict[str, Any]], stage: str) -> list[str]:
    """Per step between sizes: the exponent b of time ~ distinct_queries^b for `stage`."""
    out = []
    for a, b in zip(results, results[1:], strict=False):
        ta, tb = a["stage_s"].get(stage), b["stage_s"].get(stage)
        qa, qb = a["distinct_queries"], b["distinct_queries"]
        out.append(f"{np.log(tb / ta) / np.log(qb / qa):.2f}" if ta and tb and qa and qb
                   and qb != qa else "")
    return out


def markdown(results: list[dict[str, Any]], command: str) -> str:
    """Per size: seconds per stage, peak memory and rows per table; then growth exponents."""
    tables = sorted({t for r in results for t in r["rows"]})
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: `{command}`", "",
             "| events | distinct queries | generate s | " + " | ".join(f"{s} s" for s in STAGES)
             + " | pipeline job s | peak GB (generate / pipeline) | load |",
             "| " + " | ".join(["---:"] * (len(STAGES) + 6)) + " |"]
    for r in results:
        cells = [f"{r['events']:,}", f"{r['distinct_queries'] or 0:,}", r["generate_s"],
                 *[r["stage_s"].get(s, "") for s in STAGES], r["pipeline_s"],
                 f"{r['peak_gb']['generate']} / {r['peak_gb']['pipeline']}", r["load_1min"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "| events | " + " | ".join(tables) + " |",
              "| " + " | ".join(["---:"] * (len(tables) + 1)) + " |"]
    for r in results:
        lines.append(f"| {r['events']:,} | "
                     + " | ".join(f"{r['rows'].get(t, 0):,}" for t in tables) + " |")
    if len(results) > 1:
        steps = [f"{a['events']:,} -> {b['events']:,}" for a, b in zip(results, results[1:],
                                                                       strict=False)]
        lines += ["", "Growth exponent b of stage time ~ distinct queries^b (1 = linear):", "",
                  "| stage | " + " | ".join(steps) + " |",
                  "| --- | " + " | ".join(["---:"] * len(steps)) + " |"]
        lines += [f"| {s} | " + " | ".join(growth(results, s)) + " |" for s in STAGES]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--queries-per-event", type=float, default=0.06)
    parser.add_argument("--fixed-queries", type=int, default=None)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--data-dir", default="/tmp/ql_pipeline")
    parser.add_argument("--out", default="bench/results/pipeline_scale.json")
    parser.add_argument("--plot", default="docs/img/pipeline_scale.png")
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    parser.add_argument("--resume", action="store_true",
                        help="keep the sizes already in --out and add the others")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", "bench/pipeline_scale.py", *sys.argv[1:]])
    out = REPO / args.out
    results = json.loads(out.read_text())["results"] if args.resume and out.exists() else []
    for events in sorted(set(args.events) - {r["events"] for r in results}):
        n_queries = args.fixed_queries or max(1000, int(events * args.queries_per_event))
        result = measure(events, n_queries, Path(args.data_dir), args.conf)
        result["load_1min"] = round(os.getloadavg()[0], 1)
        print(json.dumps(result), flush=True)
        results = sorted([*results, result], key=lambda r: r["events"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": f"{platform.node()} {os.cpu_count()} cpus",
                                   "results": results}, indent=1))
        plot(results, REPO / args.plot)
        if args.write:
            write_section(REPO / "docs" / "BENCHMARKS.md",
                          f"{BEGIN}\n{markdown(results, command)}{END}", BEGIN, END,
                          "### The whole pipeline's cost curve (issue #18)")


if __name__ == "__main__":
    main()
