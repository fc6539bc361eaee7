"""CSV and TSV as people write them (RFC 4180 quoting, tabs, bad rows) and query lists without
interactions, checked against counts computed here in plain Python."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from querylens.app.pipeline import run_pipeline
from querylens.demo.samples import fashion_queries
from querylens.ingest.aggregate import IngestStats, ingest
from querylens.ingest.normalize import normalize_text
from querylens.ingest.readers import CSV_PRUNING, read_raw
from querylens.runtime.config import Config, ConfigError, NormalizeConfig, load_config
from querylens.runtime.errors import InputError
from querylens.runtime.runs import Run
from tests.helpers import make_config

HEADER = ["query", "session_id", "ts", "clicks", "add_to_bags", "purchases"]
NO_INTERACTIONS = "input has no interaction columns (clicks, add_to_bags, purchases)"


def csv_config(root: Path, path: Path, *overrides: str) -> Config:
    return make_config(root, "input.format=csv", f"input.path={path}", *overrides)


def run_ingest(spark: SparkSession, config: Config) -> tuple[dict[str, dict], IngestStats]:
    queries, stats = ingest(spark, config.input, config.normalize)
    rows = {r["query"]: r.asDict() for r in queries.collect()}
    queries.unpersist()
    return rows, stats


def key(text: str) -> str | None:
    return normalize_text(text, NormalizeConfig())


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def test_tsv_needs_the_separator_option(spark: SparkSession, tmp_path: Path) -> None:
    texts = ["wireless earbuds", "oak desk, 120 cm", "wireless earbuds", 'monitor 27"', "mouse"]
    rows = [[str(i), text, "electronics"] for i, text in enumerate(texts)]
    path = write_csv(tmp_path / "queries.tsv", [["query_id", "query", "query_class"], *rows],
                     delimiter="\t")
    with pytest.raises(InputError, match=r"columns present: query_id\tquery\tquery_class "
                                         r".*input.options.sep"):
        run_ingest(spark, csv_config(tmp_path, path))
    queries, stats = run_ingest(spark, csv_config(tmp_path, path, "input.options.sep=\\t"))
    expected = Counter(key(t) for t in texts)
    assert {q: r["n_searches"] for q, r in queries.items()} == expected
    assert stats.events == len(texts) and stats.malformed_lines == {}
    assert not stats.interactions


RFC_ROWS = [
    ['writing desk 48"', "s1", "2026-10-01T10:00:00", "1", "0", "0"],
    ["oak desk, 120 cm", "s2", "2026-10-01T10:01:00", "2", "1", "0"],
    ["line one\nline two", "s3", "2026-10-01T10:02:00", "0", "0", "0"],
    ['say "hi", then "bye"', "s4", "2026-10-01T10:03:00", "1", "1", "1"],
    ['writing desk 48"', "s5", "2026-10-02T09:00:00", "3", "0", "1"],
    ["comma, newline\r\nand \"quotes\"", "s6", "2026-10-02T09:30:00", "0", "1", "0"],
    ["plain", "s7", "2026-10-03T08:00:00", "1", "0", "0"],
]


def test_rfc4180_csv_from_the_csv_module(spark: SparkSession, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events.csv", [HEADER, *RFC_ROWS])
    config = csv_config(tmp_path, path)
    malformed: dict[str, int] = {}
    raw = read_raw(spark, config.input, malformed, [])
    read = sorted(tuple(r) for r in raw.select(*HEADER).collect())
    written = sorted((text.replace("\r\n", "\n"), *rest) for text, *rest in RFC_ROWS)
    assert read == written and malformed == {}
    queries, stats = run_ingest(spark, config)
    searches: Counter[str | None] = Counter()
    clicks: Counter[str | None] = Counter()
    for text, _, _, n_clicks, *_ in RFC_ROWS:
        searches[key(text)] += 1
        clicks[key(text)] += int(n_clicks)
    assert {q: r["n_searches"] for q, r in queries.items()} == searches
    assert {q: r["clicks"] for q, r in queries.items()} == clicks
    assert stats.events == len(RFC_ROWS) and stats.interactions


BAD_LINES = ["oak desk, 120 cm,s3,2026-10-01T10:02:00,5,0,0", "lamp"]


@pytest.mark.parametrize("multiline,pruning", [("true", "false"), ("false", "false"),
                                               ("false", "true")])
def test_bad_rows_are_counted_and_never_shift_others(
    spark: SparkSession, tmp_path: Path, multiline: str, pruning: str
) -> None:
    good = [["desk", "s1", "2026-10-01T10:00:00", "1", "0", "0"],
            ["chair", "s2", "2026-10-01T10:01:00", "0", "1", "0"],
            ["desk", "s4", "2026-10-01T10:03:00", "2", "0", "1"]]
    lines = [",".join(HEADER), ",".join(good[0]), ",".join(good[1]), BAD_LINES[0],
             ",".join(good[2]), BAD_LINES[1]]
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    config = csv_config(tmp_path, path, f"input.options.multiLine={multiline}")
    before = spark.conf.get(CSV_PRUNING)
    spark.conf.set(CSV_PRUNING, pruning)
    try:
        malformed: dict[str, int] = {}
        samples: list[str] = []
        raw = read_raw(spark, config.input, malformed, samples)
        assert sorted(r["query"] for r in raw.select("query").collect()) == ["chair", "desk",
                                                                            "desk"]
        assert malformed == {"input.path": 2} and samples == BAD_LINES
        queries, stats = run_ingest(spark, config)
    finally:
        spark.conf.set(CSV_PRUNING, before)
    assert stats.malformed_lines == {"input.path": 2}
    assert {q: (r["n_searches"], r["clicks"], r["add_to_bags"], r["purchases"])
            for q, r in queries.items()} == {"desk": (2, 3, 0, 1), "chair": (1, 0, 1, 0)}


def test_bad_rows_are_logged_with_their_text(spark: SparkSession, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.csv"
    path.write_text("query,clicks\ndesk,1\n" + "\n".join(["a,1,extra", "b,2,extra"]) + "\n")
    with caplog.at_level(logging.WARNING, logger="querylens"):
        read_raw(spark, csv_config(tmp_path, path).input, {}, [])
    warning = [r.getMessage() for r in caplog.records if "do not parse" in r.getMessage()]
    assert len(warning) == 1 and "dropped 2 rows" in warning[0]
    assert "'a,1,extra'; 'b,2,extra'" in warning[0]


@pytest.mark.parametrize("override,message", [
    ("input.options.seperator=;", "unknown CSV option input.options.seperator; valid options"),
    ("input.options.mode=FAILFAST", "input.options.mode cannot be set"),
    ("input.options.inferSchema=true", "input.options.inferSchema cannot be set"),
    ("input.options={sep: ';', delimiter: ';'}", "input.options.delimiter sets sep"),
])
def test_bad_csv_options_fail_in_the_config(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["input.format=csv", override])


def test_csv_options_override_the_defaults_key_by_key() -> None:
    config = load_config(None, ["input.options={Delimiter: ';', header: false}"])
    assert config.input.csv_options() == {"sep": ";", "quote": '"', "escape": '"',
                                          "header": "false", "encoding": "UTF-8",
                                          "multiLine": "true"}


@pytest.mark.parametrize("overrides,message", [
    (["input.format=ubi"], "input.ubi_queries_path must be set when input.format is 'ubi'"),
    (["input.format=ubi", "input.ubi_queries_path=q.ndjson"], "input.ubi_events_path must be"),
    (["input.format=csv", "input.path=''"], "input.path must be set when input.format is 'csv'"),
    (["input.format=table"], "input.table must be set when input.format is 'table'"),
])
def test_format_without_its_keys_fails_in_the_config(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def query_list(n: int, seed: int) -> list[str]:
    """Searches for `n` distinct queries of the demo vocabulary, every other one twice."""
    distinct = fashion_queries(n, seed)
    return distinct + distinct[::2]


def test_query_only_csv(spark: SparkSession, tmp_path: Path) -> None:
    texts = query_list(60, 3)
    path = write_csv(tmp_path / "queries.csv", [["query"], *[[t] for t in texts]])
    queries, stats = run_ingest(spark, csv_config(tmp_path, path))
    assert {q: r["n_searches"] for q, r in queries.items()} == Counter(key(t) for t in texts)
    assert all((r["n_sessions"], r["clicks"], r["purchases"], r["first_seen"]) == (0, 0, 0, None)
               for r in queries.values())
    assert stats.events == len(texts) and not stats.interactions


def test_query_only_csv_with_a_count_column(spark: SparkSession, tmp_path: Path) -> None:
    texts = query_list(40, 4)
    counts = [(i * 7) % 11 + 1 for i in range(len(texts))]
    path = write_csv(tmp_path / "queries.csv",
                     [["count", "query"],
                      *[[str(c), t] for c, t in zip(counts, texts, strict=True)]])
    expected: Counter[str | None] = Counter()
    for text, count in zip(texts, counts, strict=True):
        expected[key(text)] += count
    queries, stats = run_ingest(spark, csv_config(tmp_path, path))
    assert {q: r["n_searches"] for q, r in queries.items()} == expected
    assert stats.events == len(texts) and not stats.interactions


def test_a_renamed_column_that_is_missing_stays_an_error(spark: SparkSession,
                                                         tmp_path: Path) -> None:
    path = write_csv(tmp_path / "queries.csv", [["query"], ["desk"]])
    with pytest.raises(InputError, match=r"lacks mapped column weight \(input.columns.count\)"):
        run_ingest(spark, csv_config(tmp_path, path, "input.columns.count=weight"))


PIPELINE = ["cluster.n_clusters=4", "cluster.n_components=5", "cluster.sweep=false",
            "cluster.stability_seeds=[]", "report.projection=pca", "report.map_sample=100",
            "report.knife_refit_sample=100"]


def test_pipeline_on_a_query_list_skips_success_and_recommend(
    spark: SparkSession, spark_root: Path, config: Config, tmp_path: Path
) -> None:
    texts = query_list(300, 5)
    path = write_csv(tmp_path / "queries.csv", [["query"], *[[t] for t in texts]])
    cfg = make_config(spark_root, f"run.database={config.run.database}",
                      f"run.output_dir={config.run.output_dir}", "input.format=csv",
                      f"input.path={path}", *PIPELINE)
    run = Run.open(spark, cfg, "query-list")
    run_pipeline(run)
    assert run.facts["ingest"]["interactions"] is False
    assert run.facts["success"] == {"skipped": NO_INTERACTIONS}
    assert run.facts["recommend"] == {"skipped": NO_INTERACTIONS}
    assert {"success_labels", "success_predictions", "recommendations"}.isdisjoint(run.counts)
    assert run.counts["queries"] == len(set(map(key, texts)))
    html = Path(run.facts["report"]["path"]).read_text(encoding="utf-8")
    assert f"The success stage was skipped: {NO_INTERACTIONS}" in html
    assert f"The recommend stage was skipped: {NO_INTERACTIONS}" in html
    again = Run.open(spark, cfg, "query-list")
    run_pipeline(again, ["recommend"])
    assert again.facts["recommend"] == {"skipped": NO_INTERACTIONS}
    assert again.recorded()["status"] == "completed"
