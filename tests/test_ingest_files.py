"""Input folders as people leave them: notes, editor backups and stray files beside the data
are skipped by name and counted, or refused, never read as searches or dropped silently."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from querylens.ingest.aggregate import ingest
from querylens.ingest.readers import is_data_file
from querylens.runtime.errors import InputError
from tests.helpers import make_config

HEADER = ["query", "session_id", "clicks"]


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([HEADER, *rows])


def test_data_file_names() -> None:
    assert all(is_data_file(n, "csv") for n in ("a.csv", "part-0.c000.csv.gz", "b.TSV", "0_0"))
    assert not any(is_data_file(n, "csv") for n in ("README.txt", "a.csv~", "a.csv.bak",
                                                    "notes.md", "a.csv.swp", "x.json"))
    assert is_data_file("part-0.snappy.parquet", "parquet")
    assert not is_data_file("part-0.snappy.parquet.bak", "parquet")


def test_non_data_files_in_a_csv_folder_are_skipped_and_counted(
    spark: SparkSession, tmp_path: Path
) -> None:
    folder = tmp_path / "logs"
    write_csv(folder / "day1.csv", [["red dress", "s1", "1"], ["blue jeans", "s2", "0"]])
    write_csv(folder / "day1.csv~", [["backup query", "s9", "0"]])
    write_csv(folder / "day1.csv.bak", [["old query", "s9", "0"]])
    (folder / "README.txt").write_text("query\nthese are exports from the search team\n")
    (folder / "_SUCCESS").write_text("")
    config = make_config(tmp_path, "input.format=csv", f"input.path={folder}")
    queries, stats = ingest(spark, config.input, config.normalize)
    texts = sorted(r.query for r in queries.collect())
    queries.unpersist()
    assert texts == ["blue jeans", "red dress"]
    assert stats.skipped_files == 3
    assert stats.events == 2


def test_a_folder_of_only_non_data_files_is_refused(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.txt").write_text("query\nnothing here\n")
    config = make_config(tmp_path, "input.format=csv", f"input.path={folder}")
    with pytest.raises(InputError, match="no csv data files.*README.txt"):
        ingest(spark, config.input, config.normalize)


def test_stray_parquet_beside_partition_folders_is_refused(
    spark: SparkSession, tmp_path: Path
) -> None:
    folder = tmp_path / "events"
    rows = [("red dress", "s1", 1), ("blue jeans", "s2", 0)]
    df = spark.createDataFrame(rows, "query string, session_id string, clicks long")
    df.write.parquet(str(folder / "dt=2026-10-01"))
    df.write.parquet(str(tmp_path / "stray"))
    stray = next((tmp_path / "stray").glob("*.parquet"))
    stray.rename(folder / "stray.parquet")
    config = make_config(tmp_path, "input.format=parquet", f"input.path={folder}")
    with pytest.raises(InputError, match=r"stray.parquet sits beside partition folders "
                                         r"\(dt=2026-10-01"):
        ingest(spark, config.input, config.normalize)
    (folder / "stray.parquet").unlink()
    (folder / "dt=2026-10-01" / "notes.txt").write_text("not data")
    queries, stats = ingest(spark, config.input, config.normalize)
    assert sorted(r.query for r in queries.collect()) == ["blue jeans", "red dress"]
    assert stats.skipped_files == 1
    queries.unpersist()
