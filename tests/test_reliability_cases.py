"""The cases issue 17 found handled poorly, each now a one-line error or a recovery: an output
folder that is a file, the `global_temp` database, a second run on a busy Derby metastore, a full
disk, Parquet files with int32 and int64 columns, a glob in `input.path`."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import querylens
from querylens.app.cli import main
from querylens.ingest.aggregate import ingest
from querylens.runtime import runs
from querylens.runtime.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]


def error_lines(err: str) -> list[str]:
    """The lines of stderr that are not log records (`2026-... INFO querylens: ...`)."""
    return [line for line in err.splitlines() if line.strip() and not line[:2].isdigit()]


def settings(config: Config, *extra: str) -> list[str]:
    """CLI `--set` arguments for the module's database and folders."""
    pairs = [f"run.database={config.run.database}", f"run.output_dir={config.run.output_dir}",
             f"run.warehouse_dir={config.run.warehouse_dir}",
             f"run.metastore_dir={config.run.metastore_dir}", *extra]
    return [arg for pair in pairs for arg in ("--set", pair)]


def manifest(spark: SparkSession, config: Config, run_id: str) -> Any:
    return (spark.table(f"{config.run.database}.runs").where(F.col("run_id") == run_id)
            .first())


@pytest.fixture
def no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a job gets as far as building a Spark session."""
    def refuse(_config: Config) -> None:
        raise AssertionError("a Spark session was started")

    monkeypatch.setattr("querylens.app.jobs.build_session", refuse)


# output_dir that is a file; run.database=global_temp ------------------------------------------

@pytest.mark.parametrize("inside", [False, True])
def test_an_output_dir_that_is_a_file_is_one_line_before_spark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_spark: None, inside: bool
) -> None:
    file = tmp_path / "output"
    file.write_text("not a folder")
    given = file / "sub" if inside else file
    assert main(["pipeline", "--set", f"run.output_dir={given}"]) == 2
    where = f"is inside the file {file}" if inside else "is a file"
    assert error_lines(capsys.readouterr().err) == [
        f"querylens pipeline: error: run.output_dir must be a folder, but {given} {where}"]


@pytest.mark.parametrize("database", ["global_temp", "GLOBAL_TEMP"])
def test_the_global_temp_database_is_one_line_before_spark(
    database: str, capsys: pytest.CaptureFixture[str], no_spark: None
) -> None:
    assert main(["ingest", "--set", f"run.database={database}"]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(f"querylens ingest: error: run.database must not be {database!r}: "
                           f"Spark reserves it for global temporary views")
    renamed = ["spark.conf={spark.sql.globalTempDatabase: shared_views}"]
    load_config(None, ["run.database=global_temp", *renamed])
    with pytest.raises(ValueError, match="run.database must not be 'shared_views'"):
        load_config(None, ["run.database=shared_views", *renamed])


# a second run against the same embedded Derby metastore ------------------------------------

def test_a_second_run_on_a_busy_derby_metastore_is_one_line(
    spark: SparkSession, spark_root: Path, tmp_path: Path
) -> None:
    """This process's session has the metastore booted; a job in another process using the
    same metastore folder stops before starting Spark, naming the folder and the JVM."""
    metastore = spark_root / "metastore"
    jvm = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
    logs = tmp_path / "logs.csv"
    logs.write_text("query\nred dress\n")
    env = {**os.environ, "PYTHONPATH": str(Path(querylens.__file__).parents[1]),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "ingest.py"),
         "--set", f"run.metastore_dir={metastore}",
         "--set", f"run.warehouse_dir={spark_root / 'warehouse'}",
         "--set", f"run.output_dir={tmp_path / 'out'}", "--set", f"input.path={logs}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_lines(done.stderr) == [
        f"querylens ingest: error: another run holds the embedded Derby metastore "
        f"{metastore / 'metastore_db'} (process {jvm}): wait for it to finish, or give this run "
        f"its own run.metastore_dir and run.warehouse_dir, or use a shared Hive metastore "
        f"(spark.conf spark.hadoop.hive.metastore.uris)"]
    assert len(done.stderr.splitlines()) < 5


def test_the_lock_holder_is_the_live_jvm_and_a_lock_left_behind_is_free(
    spark: SparkSession, spark_root: Path, tmp_path: Path
) -> None:
    from querylens.runtime.session import derby_lock_holder

    jvm = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
    assert derby_lock_holder(spark_root / "metastore" / "metastore_db") == f"process {jvm}"
    (tmp_path / "dbex.lck").write_text("left behind")
    assert derby_lock_holder(tmp_path) is None
    assert derby_lock_holder(tmp_path / "missing") is None


# a full disk --------------------------------------------------------------------------------

@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch, config: Config) -> dict[str, Any]:
    """While `armed`, the disk fills at the first write of `queries`: that write and every
    later table write fail with ENOSPC naming `target`."""
    state: dict[str, Any] = {"armed": True, "full": False, "target": (
        f"{config.run.warehouse_dir}/{config.run.database}.db/queries/part-00000.parquet")}
    real = runs.write_run_table

    def write(df: Any, database: str, table: str, *args: Any, **kwargs: Any) -> int:
        state["full"] = state["armed"] and (state["full"] or table == "queries")
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), state["target"])
        return real(df, database, table, *args, **kwargs)

    monkeypatch.setattr(runs, "write_run_table", write)
    return state


def test_a_full_disk_is_one_line_and_the_next_job_marks_the_run_failed(
    spark: SparkSession, config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    full_disk: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs.csv"
    logs.write_text("query,clicks\nred dress,1\nblue jeans,0\nred dress,0\n")
    csv = settings(config, "input.format=csv", f"input.path={logs}")
    code = main(["ingest", "--run-id", "disk-full", *csv])
    [line] = error_lines(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(f"querylens ingest: error: disk full: No space left on device "
                           f"(errno ENOSPC): {full_disk['target']}; free space: run.warehouse_dir ")
    assert "spark.local.dir" in line
    row = manifest(spark, config, "disk-full")
    assert row.status == "running"
    assert json.loads(row.facts_json)["driver"]["pid"] == os.getpid()

    full_disk["armed"] = False
    monkeypatch.setattr(runs, "process_alive", lambda pid: pid != os.getpid())
    assert main(["ingest", "--run-id", "after", *csv]) == 0
    row = manifest(spark, config, "disk-full")
    assert row.status == "failed" and row.finished_at is not None
    assert json.loads(row.facts_json)["failure"].startswith(
        f"abandoned: driver process {os.getpid()} on ")
    assert manifest(spark, config, "after").status == "completed"


def test_process_alive_tells_a_finished_process_from_a_live_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert runs.process_alive(os.getpid())
    assert not runs.process_alive(child.pid)


def test_no_space_is_found_in_an_executor_error(spark: SparkSession) -> None:
    from querylens.runtime.errors import no_space

    @F.udf("int")
    def write_scratch(value):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device", "/scratch/blockmgr-1/shuffle_0.data")

    with pytest.raises(Exception) as caught:
        spark.range(1).select(write_scratch("id")).collect()
    found = no_space(caught.value)
    assert found is not None and "No space left on device" in found
    assert "/scratch/blockmgr-1/shuffle_0.data" in found
    assert no_space(RuntimeError("lost executor")) is None
    assert no_space(OSError(errno.ENOSPC, "No space left on device")) == (
        "No space left on device (errno ENOSPC)")


# Parquet files that differ only by int32 vs int64 ---------------------------------------------

def test_parquet_int32_and_int64_files_are_read_as_bigint_and_counted(
    spark: SparkSession, config: Config, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    parts = [pd.DataFrame({"query": ["red dress", "jeans"], "clicks": [1, 2]}),
             pd.DataFrame({"query": ["red dress", "boots"], "clicks": [3, 5_000_000_000]}),
             pd.DataFrame({"query": ["jeans"], "clicks": [4]})]
    kinds = [pa.int32(), pa.int64(), pa.int32()]
    for i, (part, kind) in enumerate(zip(parts, kinds, strict=True)):
        table = pa.table({"query": part["query"], "clicks": pa.array(part["clicks"], kind)})
        pq.write_table(table, folder / f"part-{i}.parquet")
    settings_ = load_config(None, ["input.format=parquet", f"input.path={folder}"])
    queries, stats = ingest(spark, settings_.input, settings_.normalize)
    expected = pd.concat(parts).groupby("query")["clicks"].sum().to_dict()
    found = {r.query: r.clicks for r in queries.select("query", "clicks").collect()}
    assert found == expected and found["boots"] == 5_000_000_000
    assert stats.widened_columns == {"clicks": {"to": "bigint", "files": 2}}
    assert stats.events == 5


# a glob in input.path ------------------------------------------------------------------------

def test_a_glob_in_input_path_is_read_and_its_files_counted(
    spark: SparkSession, config: Config, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    (logs / "old").mkdir(parents=True)
    days = {"day1.csv": ["red dress", "jeans"], "day2.csv": ["red dress"],
            "day3.csv": ["boots", "boots", "hat"]}
    for name, rows in {**days, "other.csv": ["never read"]}.items():
        (logs / name).write_text("query\n" + "\n".join(rows) + "\n")
    (logs / "old" / "day0.csv").write_text("query\nnot matched\n")
    (logs / "day9.txt").write_text("notes, not a CSV file\n")
    pattern = f"{logs}/day*"
    csv = settings(config, "input.format=csv", f"input.path={pattern}")
    assert main(["ingest", "--run-id", "glob", *csv]) == 0
    facts = json.loads(manifest(spark, config, "glob").facts_json)["ingest"]
    assert facts["glob_files"] == len(days)
    assert facts["skipped_files"] == 1
    assert facts["events"] == sum(len(rows) for rows in days.values())
    read = {r.query for r in spark.table(f"{config.run.database}.queries")
            .where(F.col("run_id") == "glob").collect()}
    assert read == {q for rows in days.values() for q in rows}


def test_a_glob_that_matches_nothing_is_one_line(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pattern = f"{tmp_path}/nothing-*.csv"
    csv = settings(config, "input.format=csv", f"input.path={pattern}")
    assert main(["ingest", "--run-id", "glob-none", *csv]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"querylens ingest: error: input.path {pattern} matches no files"]


def test_glob_helpers_read_hadoop_braces() -> None:
    from querylens.ingest.readers import expand_braces, glob_base

    assert expand_braces("/l/{a,b}/x{1,2}.csv") == ["/l/a/x1.csv", "/l/a/x2.csv", "/l/b/x1.csv",
                                                    "/l/b/x2.csv"]
    assert glob_base("/logs/dt=*/part-?.csv") == "/logs"
