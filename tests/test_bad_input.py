"""The bad-input corpus: odd query text, broken files, wrong types, config errors.

Every case ends in a clear error naming what is wrong, or in documented handling whose counts
land in the run manifest (`IngestStats`); each runs under a deadline so none can hang.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from querylens.app.pipeline import run_pipeline
from querylens.ingest.aggregate import IngestStats, ingest
from querylens.runtime.config import Config, ConfigError, load_config
from querylens.runtime.errors import InputError
from querylens.runtime.runs import Run, completed_run_ids
from tests.helpers import make_config

DEADLINE_S = 120
HEADER = "query,session_id,ts,clicks,add_to_bags,purchases"


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail a case that runs longer than DEADLINE_S instead of hanging."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"bad-input case ran longer than {DEADLINE_S}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(DEADLINE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def events(queries: list[Any], **columns: list[Any]) -> pd.DataFrame:
    n = len(queries)
    base: dict[str, Any] = {
        "query": queries,
        "session_id": [f"s{i}" for i in range(n)],
        "ts": pd.to_datetime(["2026-10-01 10:00:00"] * n),
        "clicks": [1] * n,
        "add_to_bags": [0] * n,
        "purchases": [0] * n,
    }
    base.update(columns)
    return pd.DataFrame(base)


def parquet(path: Path, frame: pd.DataFrame | pa.Table) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame,
                                                                           preserve_index=False)
    pq.write_table(table, path / "part-0.parquet", coerce_timestamps="us",
                   allow_truncated_timestamps=True)
    return path


def run_ingest(spark: SparkSession, root: Path, path: Path, *overrides: str
               ) -> tuple[pd.DataFrame, IngestStats]:
    config = make_config(root, f"input.path={path}", *overrides)
    queries, stats = ingest(spark, config.input, config.normalize)
    frame = queries.toPandas()
    queries.unpersist()
    return frame, stats


# --- query text: one Parquet file, ingested once -------------------------------------------

BLANK = {
    "null": None,
    "empty": "",
    "spaces": "     ",
    "tabs_newlines": "\t\n\r ",
    "unicode_spaces": "\u3000\u00a0\u2003",
    "controls_only": "\x00\x01\x1f\x7f",
    "invisible_only": "\u200b\ufeff",
}

KEPT = {
    "long_100k": ("nike " * 20_000, ("nike " * 20_000)[:512].rstrip()),
    "long_no_spaces": ("x" * 100_000, "x" * 512),
    "control_chars": ("red\x00dress\x07 \x1bblue", "red dress blue"),
    "nul_and_c1": ("black\x85boots\x9f", "black boots"),
    "emoji": ("Red Dress 👗🔥", "red dress 👗🔥"),
    "emoji_zwj": ("family 👩\u200d👧 pyjamas", "family 👩\u200d👧 pyjamas"),
    "arabic_rtl": ("فستان أحمر", "فستان أحمر"),
    "hebrew_rtl": ("שמלה אדומה", "שמלה אדומה"),
    "mixed_rtl_ltr": ("Nike נעליים", "nike נעליים"),
    "html": ("<script>alert('x')</script> Dress", "<script>alert('x')</script> dress"),
    "html_entities": ("jeans &amp; <b>tops</b>", "jeans &amp; <b>tops</b>"),
    "sql_drop": ("'; DROP TABLE querylens.queries; --", "'; drop table querylens.queries; --"),
    "sql_union": ("dress' UNION SELECT * FROM runs --", "dress' union select * from runs --"),
    "json_text": ('{"q": "dress", "size": 38}', '{"q": "dress", "size": 38}'),
    "zero_width": ("ni\u200bke air\u2060max", "nike airmax"),
    "bom_prefix": ("\ufeffadidas campus", "adidas campus"),
    "fullwidth": ("ＮＩＫＥ　ＡＩＲ", "nike air"),
    "combining_accent": ("cafe\u0301 blazer", "caf\u00e9 blazer"),
    "replacement_char": ("linen\ufffd shirt", "linen shirt"),
    "email": ("order for jane.doe+x@example.co.uk dress", "order for [email] dress"),
    "phone": ("call +44 20 7946 0958 about boots", "call [phone] about boots"),
    "card": ("4111 1111 1111 1111 gift card", "[card] gift card"),
    "punctuation_only": ("!!!???", "!!!???"),
    "leading_zeros": ("00501", "00501"),
}


@pytest.fixture(scope="module")
def text_corpus(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[pd.DataFrame, IngestStats]:
    root = tmp_path_factory.mktemp("text")
    rows: list[str | None] = []
    for bit, text in enumerate(BLANK.values()):
        rows += [text] * 2**bit
    rows += [raw for raw, _ in KEPT.values()]
    return run_ingest(spark, root, parquet(root / "events", events(rows)))


@pytest.mark.parametrize("case", list(BLANK))
def test_blank_query_is_skipped_and_counted(
    case: str, text_corpus: tuple[pd.DataFrame, IngestStats]
) -> None:
    _, stats = text_corpus
    bit = list(BLANK).index(case)
    assert stats.skipped_empty_queries >> bit & 1, f"{case!r} was not counted as skipped"


@pytest.mark.parametrize("case", list(KEPT))
def test_odd_query_text_is_normalised(
    case: str, text_corpus: tuple[pd.DataFrame, IngestStats]
) -> None:
    queries, _ = text_corpus
    expected = KEPT[case][1]
    assert expected in set(queries["query"]), f"{case}: {expected[:60]!r} not among the queries"
    row = queries[queries["query"] == expected].iloc[0]
    assert len(row["query_key"]) == 16 and row["n_searches"] == 1


def test_text_corpus_counts_in_manifest(text_corpus: tuple[pd.DataFrame, IngestStats]) -> None:
    queries, stats = text_corpus
    assert stats.skipped_empty_queries == 2 ** len(BLANK) - 1
    assert stats.queries == len(queries) == len(KEPT)
    assert stats.events == 2 ** len(BLANK) - 1 + len(KEPT)
    assert stats.redacted_searches == {"email": 1, "card": 1, "phone": 1}
    assert max(queries["query"].str.len()) == 512


# --- files and columns ---------------------------------------------------------------------

def test_invalid_utf8_bytes_in_csv_are_replaced(spark: SparkSession, tmp_path: Path) -> None:
    data = (HEADER + "\nred dress\xff\xfe,s1,2026-10-01 10:00:00,1,0,0\n").encode()
    data = data.replace("\xff\xfe".encode(), b"\xff\xfe")
    data += b"blue\xc3(jeans,s2,2026-10-01 11:00:00,0,1,0\n"
    (tmp_path / "e.csv").write_bytes(data)
    queries, stats = run_ingest(spark, tmp_path, tmp_path / "e.csv", "input.format=csv")
    assert sorted(queries["query"]) == ["blue (jeans", "red dress"]
    assert stats.events == 2


def test_csv_keeps_leading_zeros_and_digits_as_text(spark: SparkSession, tmp_path: Path) -> None:
    rows = "\n00501,s1,2026-10-01,1,0,0\n501,s2,2026-10-01,1,0,0\n"
    (tmp_path / "e.csv").write_text(HEADER + rows)
    queries, _ = run_ingest(spark, tmp_path, tmp_path / "e.csv", "input.format=csv")
    assert sorted(queries["query"]) == ["00501", "501"]


def test_csv_with_bom_header(spark: SparkSession, tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_bytes(b"\xef\xbb\xbf" + (HEADER + "\nboots,s1,2026-10-01,1,0,0\n")
                                     .encode())
    queries, _ = run_ingest(spark, tmp_path, tmp_path / "e.csv", "input.format=csv")
    assert list(queries["query"]) == ["boots"]


def test_duplicated_csv_column(spark: SparkSession, tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("query,query,session_id,ts,clicks,add_to_bags,purchases\n"
                                    "a,b,s1,2026-10-01,1,0,0\n")
    with pytest.raises(InputError, match="duplicated column 'query'"):
        run_ingest(spark, tmp_path, tmp_path / "e.csv", "input.format=csv")


def test_duplicated_parquet_column_differing_in_case(spark: SparkSession, tmp_path: Path) -> None:
    table = pa.Table.from_pandas(events(["a"]), preserve_index=False)
    table = table.append_column("Query", pa.array(["b"]))
    with pytest.raises(InputError, match="(?i)duplicate.*query"):
        run_ingest(spark, tmp_path, parquet(tmp_path / "e", table))


def test_query_column_of_wrong_type(spark: SparkSession, tmp_path: Path) -> None:
    path = parquet(tmp_path / "e", events([["red", "dress"]]))
    with pytest.raises(InputError, match=r"input column 'query' \(input.columns.query\) has type "
                                         r"array<string>"):
        run_ingest(spark, tmp_path, path)


def test_count_column_of_struct_type(spark: SparkSession, tmp_path: Path) -> None:
    path = parquet(tmp_path / "e", events(["boots"], clicks=[{"n": 1}]))
    with pytest.raises(InputError, match="input column 'clicks'.*struct<n:bigint>"):
        run_ingest(spark, tmp_path, path)


def test_non_numeric_counts_become_zero_and_are_counted(
    spark: SparkSession, tmp_path: Path
) -> None:
    frame = events(["boots", "boots", "boots"], clicks=["3", "many", None],
                   purchases=["1", "99999999999999999999", "0"])
    queries, stats = run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame))
    assert (queries["clicks"].tolist(), queries["purchases"].tolist()) == ([3], [1])
    assert stats.invalid_counts == 2


def test_negative_counts_are_clamped_and_counted(spark: SparkSession, tmp_path: Path) -> None:
    frame = events(["scarf", "scarf"], clicks=[-5, 2], add_to_bags=[-1, -1])
    queries, stats = run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame))
    assert queries["clicks"].tolist() == [2] and queries["add_to_bags"].tolist() == [0]
    assert stats.negative_counts == 3


def test_fractional_and_boolean_counts(spark: SparkSession, tmp_path: Path) -> None:
    frame = events(["belt", "belt"], clicks=[2.0, 1.0], purchases=[True, False])
    queries, stats = run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame))
    assert queries["clicks"].tolist() == [3] and queries["purchases"].tolist() == [1]
    assert stats.invalid_counts == 0


def test_future_timestamps_are_kept_and_counted(spark: SparkSession, tmp_path: Path) -> None:
    frame = events(["coat", "coat"], ts=pd.to_datetime(["2199-01-01", "2026-10-02"]))
    queries, stats = run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame))
    assert stats.future_timestamps == 1
    assert pd.Timestamp(queries["last_seen"].iloc[0]).year == 2199


def test_unparseable_timestamps_become_null_and_are_counted(
    spark: SparkSession, tmp_path: Path
) -> None:
    frame = events(["hat", "hat"], ts=["yesterday", "2026-10-03 08:00:00"])
    queries, stats = run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame))
    assert stats.invalid_timestamps == 1
    assert str(pd.Timestamp(queries["first_seen"].iloc[0]).date()) == "2026-10-03"


def test_epoch_second_timestamps(spark: SparkSession, tmp_path: Path) -> None:
    frame = events(["gloves"], ts=[1_790_000_000])
    queries, stats = run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame))
    expected = pd.Timestamp(1_790_000_000, unit="s")
    assert pd.Timestamp(queries["first_seen"].iloc[0]).tz_localize(None) == expected
    assert stats.invalid_timestamps == 0


def test_filters_in_unexpected_formats(spark: SparkSession, tmp_path: Path) -> None:
    frame = events(["dress", "dress", "dress", "dress"],
                   filter_gender=["women", "", None, "  "],
                   filter_brand=[["zara", "mango"], None, [], None],
                   filter_colour=pd.array([1, None, 2, None], dtype="Int64"))
    queries, _ = run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame))
    assert sorted(queries["query"]) == ["dress", "dress 2", "dress women zara mango 1"]


def test_filter_of_struct_type_is_rejected(spark: SparkSession, tmp_path: Path) -> None:
    frame = events(["dress"], filter_gender=[{"value": "women"}])
    with pytest.raises(InputError, match="filter column 'filter_gender' has type struct"):
        run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame))


def test_column_names_with_spaces_and_dots(spark: SparkSession, tmp_path: Path) -> None:
    frame = events(["parka"]).rename(columns={"query": "search.term", "session_id": "user id"})
    queries, _ = run_ingest(spark, tmp_path, parquet(tmp_path / "e", frame),
                            "input.columns.query=search.term", "input.columns.session_id=user id")
    assert list(queries["query"]) == ["parka"]


def test_nanosecond_parquet_timestamps(spark: SparkSession, tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    table = pa.Table.from_pandas(events(["boots"]), preserve_index=False)
    pq.write_table(table, tmp_path / "e" / "part-0.parquet", version="2.6")
    with pytest.raises(InputError, match=r"cannot read parquet .*TIMESTAMP\(NANOS"):
        run_ingest(spark, tmp_path, tmp_path / "e")


def test_missing_mapped_column(spark: SparkSession, tmp_path: Path) -> None:
    path = parquet(tmp_path / "e", events(["a"]).drop(columns="session_id"))
    with pytest.raises(InputError, match=r"lacks mapped column visit \(input.columns.session_id"):
        run_ingest(spark, tmp_path, path, "input.columns.session_id=visit")


def test_empty_csv_file(spark: SparkSession, tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_bytes(b"")
    with pytest.raises(InputError, match="has no columns"):
        run_ingest(spark, tmp_path, tmp_path / "e.csv", "input.format=csv")


def test_csv_with_header_only(spark: SparkSession, tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text(HEADER + "\n")
    with pytest.raises(InputError, match="no search events"):
        run_ingest(spark, tmp_path, tmp_path / "e.csv", "input.format=csv")


def test_only_blank_queries(spark: SparkSession, tmp_path: Path) -> None:
    path = parquet(tmp_path / "e", events([None, "  ", "\x00"]))
    with pytest.raises(InputError, match="no non-empty queries"):
        run_ingest(spark, tmp_path, path)


def test_empty_parquet_folder(spark: SparkSession, tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="cannot read parquet .*e: .*(?i:infer schema)"):
        run_ingest(spark, tmp_path, tmp_path / "e")


def truncated_file(folder: Path, keep: float) -> Path:
    whole = parquet(folder, events(["boots"] * 50)) / "part-0.parquet"
    data = whole.read_bytes()
    whole.write_bytes(data[: int(len(data) * keep)])
    return folder


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "zero_bytes"])
def test_truncated_parquet_names_the_file(spark: SparkSession, tmp_path: Path,
                                          keep: float) -> None:
    path = truncated_file(tmp_path / "e", keep)
    with pytest.raises(InputError, match="part-0.parquet") as info:
        run_ingest(spark, tmp_path, path)
    assert "\n" not in str(info.value) and "\tat " not in str(info.value)


def test_truncated_parquet_beside_a_good_one(spark: SparkSession, tmp_path: Path) -> None:
    folder = parquet(tmp_path / "e", events(["boots"]))
    (folder / "part-0.parquet").rename(folder / "part-a.parquet")
    data = (folder / "part-a.parquet").read_bytes()
    (folder / "part-b.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="part-b.parquet"):
        run_ingest(spark, tmp_path, folder)


def test_text_file_named_parquet(spark: SparkSession, tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "part-0.parquet").write_text(HEADER + "\nboots,s1,2026-10-01,1,0,0\n")
    with pytest.raises(InputError, match="part-0.parquet"):
        run_ingest(spark, tmp_path, tmp_path / "e")


def test_missing_input_path(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="input.path not found: .*nowhere"):
        run_ingest(spark, tmp_path, tmp_path / "nowhere")


def test_missing_input_table(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="input table not found: querylens.no_such_logs"):
        run_ingest(spark, tmp_path, tmp_path, "input.format=table",
                   "input.table=querylens.no_such_logs")


def test_table_format_without_table(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="input.table must be set when input.format is 'table'"):
        run_ingest(spark, tmp_path, tmp_path, "input.format=table")


def ubi_files(folder: Path, query_lines: list[str]) -> list[str]:
    folder.mkdir()
    (folder / "q.ndjson").write_text("\n".join(query_lines) + "\n")
    (folder / "e.ndjson").write_text("\n".join([
        json.dumps({"query_id": "q1", "action_name": "click"}),
        json.dumps({"query_id": "q2", "action_name": "purchase"}),
    ]) + "\n")
    return ["input.format=ubi", f"input.ubi_queries_path={folder / 'q.ndjson'}",
            f"input.ubi_events_path={folder / 'e.ndjson'}"]


def test_ubi_file_with_a_malformed_line(spark: SparkSession, tmp_path: Path) -> None:
    sets = ubi_files(tmp_path / "ubi", [
        json.dumps({"query_id": "q1", "user_query": "Boots", "timestamp": "2026-10-01T10:00:00"}),
        '{"query_id": "q2", "user_query": "trunc',
        json.dumps({"query_id": "q2", "user_query": "Coat", "timestamp": "2026-10-01T11:00:00"}),
    ])
    queries, stats = run_ingest(spark, tmp_path, tmp_path, *sets)
    assert sorted(queries["query"]) == ["boots", "coat"]
    assert stats.malformed_lines == {"input.ubi_queries_path": 1}
    assert queries.set_index("query").loc["coat", "purchases"] == 1


def test_ubi_file_with_only_malformed_lines(spark: SparkSession, tmp_path: Path) -> None:
    sets = ubi_files(tmp_path / "ubi", ["{not json", "also not json"])
    with pytest.raises(InputError, match=r"q.ndjson has no valid JSON line \(2 malformed\)"):
        run_ingest(spark, tmp_path, tmp_path, *sets)


def test_ubi_without_events_path(spark: SparkSession, tmp_path: Path) -> None:
    sets = ubi_files(tmp_path / "ubi", [json.dumps({"query_id": "q1"})])
    with pytest.raises(ConfigError, match="input.ubi_events_path must be set"):
        run_ingest(spark, tmp_path, tmp_path, *sets[:2])


# --- config ---------------------------------------------------------------------------------

CONFIG_CASES = {
    "unknown_section": (["foo.bar=1"], "unknown config key 'foo'"),
    "unknown_key": (["cluster.n_cluster=5"], "unknown config key 'cluster.n_cluster'"),
    "int_as_text": (["cluster.n_clusters=abc"], "cluster.n_clusters must be an integer"),
    "int_as_float": (["cluster.n_clusters=2.5"], "cluster.n_clusters must be an integer"),
    "bool_as_text": (["normalize.lowercase=maybe"], "normalize.lowercase must be true or false"),
    "list_as_scalar": (["input.filter_columns=gender"], "input.filter_columns must be a list"),
    "list_item_type": (["cluster.sweep_clusters=[2, x]"], r"cluster.sweep_clusters\[1\] must be"),
    "section_as_scalar": (["cluster=5"], "cluster must be a mapping"),
    "bad_literal": (["input.format=xlsx"], "input.format must be one of csv, parquet"),
    "k_below_2": (["cluster.n_clusters=1"], "cluster.n_clusters must be >= 2, got 1"),
    "sweep_k_below_2": (["cluster.sweep_clusters=[1, 5]"], "sweep_clusters values must be >= 2"),
    "zero_components": (["cluster.n_components=0"], "cluster.n_components must be >= 1"),
    "zero_batch": (["embed.batch_size=0"], "embed.batch_size must be >= 1"),
    "database_dash": (["run.database=query-lens"], "run.database must be a plain identifier"),
    "database_injection": (["run.database='x; DROP TABLE y'"], "run.database must be a plain"),
    "table_space": (["input.table=logs.search events"], "input.table must be a plain identifier"),
    "table_backtick": (["input.table=logs.`x`"], "input.table must be a plain identifier"),
    "override_without_equals": (["cluster.n_clusters"], "must look like section.key=value"),
    "override_bad_yaml": (["cluster.sweep_clusters=[1,"], "the value is not valid YAML"),
    "unknown_fault_point": (["run.fail_first_attempt=[explode]"],
                            "run.fail_first_attempt values must be embed or score"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_error_names_the_key(case: str) -> None:
    overrides, message = CONFIG_CASES[case]
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize("content,message", [
    (None, "config file not found"),
    ("cluster: [1, 2\n", "is not valid YAML"),
    ("- cluster\n- run\n", "must hold a mapping at the top level"),
    (b"cluster:\n  label_terms: \xff\n", "is not valid YAML"),
], ids=["missing_file", "bad_yaml", "top_level_list", "invalid_utf8"])
def test_config_file_errors(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "c.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_run_id_that_is_not_safe(spark: SparkSession, config: Config) -> None:
    with pytest.raises(ConfigError, match="run id must be"):
        Run(spark, config, run_id="x'; DROP TABLE runs; --")


def test_unknown_stage_fails_before_anything_is_recorded(
    spark: SparkSession, config: Config
) -> None:
    with pytest.raises(ValueError, match="unknown stage 'ingset'"):
        run_pipeline(Run(spark, config, run_id="typo"), ["ingset"])
    assert "typo" not in completed_run_ids(spark, config.run.database)


# --- embedding and clustering inputs --------------------------------------------------------

def embeddings_frame(spark: SparkSession, vectors: list[list[float] | None]) -> Any:
    return spark.createDataFrame([(f"k{i}", v) for i, v in enumerate(vectors)],
                                 "query_key string, embedding array<float>")


def test_nan_embeddings_are_rejected(spark: SparkSession) -> None:
    from querylens.cluster.fit import check_embeddings

    df = embeddings_frame(spark, [[0.1, 0.2], [math.nan, 0.0], [0.3, 0.1]])
    with pytest.raises(ValueError, match="1 embeddings with NaN, inf or null values for m1"):
        check_embeddings(df, "m1")
    kept, stats = check_embeddings(df, "m1", "drop")
    assert (kept.count(), stats.rejected_nonfinite) == (2, 1)


def test_mixed_dimension_embeddings(spark: SparkSession) -> None:
    from querylens.cluster.fit import check_embeddings

    df = embeddings_frame(spark, [[0.1, 0.2], [0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="mixed dimension for m1: 1 rows of dim 2, 1 rows of dim"):
        check_embeddings(df, "m1")


def test_too_few_queries_to_cluster(spark: SparkSession) -> None:
    from querylens.cluster.fit import check_embeddings, check_sizes

    with pytest.raises(ValueError, match="at least 2 queries with embeddings, got 1"):
        check_embeddings(embeddings_frame(spark, [[0.1, 0.2]]), "m1")
    _, stats = check_embeddings(embeddings_frame(spark, [[0.1, 0.2], [0.2, 0.1]]), "m1")
    with pytest.raises(ValueError, match="cluster.n_clusters=15 is larger than the 2 distinct"):
        check_sizes(load_config(None, ["cluster.n_clusters=15"]).cluster, stats)


def test_model_path_that_does_not_exist(tmp_path: Path) -> None:
    from querylens.embed.encoders import ModelLoadError, load_encoder

    with pytest.raises(ModelLoadError, match="looks like a local path"):
        load_encoder(str(tmp_path / "no-model"), "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="cannot load model .*empty"):
        load_encoder(str(tmp_path / "empty"), "cpu")


def test_embedding_udf_on_odd_texts(spark: SparkSession) -> None:
    from pyspark.sql import functions as F

    from querylens.embed.udf import EncoderSettings, embed_struct_column

    texts = [None, "", "   ", "👗🔥", "x " * 50_000, "<b>dress</b>", "فستان"]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i int, t string")
    out = df.select("i", embed_struct_column(F.col("t"), EncoderSettings("minilm", "cpu"))
                    .alias("e")).orderBy("i").collect()
    assert [r.e.embedding is None for r in out] == [True, True, True, False, False, False, False]
    norms = [float(np.linalg.norm(r.e.embedding)) for r in out[3:]]
    assert all(len(r.e.embedding) == 384 for r in out[3:])
    assert np.allclose(norms, 1.0, atol=1e-4)
    assert [r.e.truncated for r in out[3:]] == [False, True, False, False]


# --- a failing run leaves the published tables alone ----------------------------------------

def test_bad_input_leaves_the_last_completed_run_readable(
    spark: SparkSession, tmp_path: Path
) -> None:
    good = parquet(tmp_path / "good", events(["boots", "coat", "boots"]))
    bad = truncated_file(tmp_path / "bad", 0.5)
    config = make_config(tmp_path, f"input.path={good}", "run.database=badinput")
    spark.sql("CREATE DATABASE IF NOT EXISTS badinput")
    run_pipeline(Run(spark, config, run_id="good"), ["ingest"])
    before = spark.table("badinput.queries_latest").toPandas()
    failing = make_config(tmp_path, f"input.path={bad}", "run.database=badinput")
    with pytest.raises(InputError, match="part-0.parquet"):
        run_pipeline(Run(spark, failing, run_id="bad"), ["ingest"])
    statuses = dict(spark.sql("SELECT run_id, status FROM badinput.runs").collect())
    assert statuses == {"good": "completed", "bad": "failed"}
    assert completed_run_ids(spark, "badinput") == ["good"]
    after = spark.table("badinput.queries_latest").toPandas()
    pd.testing.assert_frame_equal(before.sort_values("query_key").reset_index(drop=True),
                                  after.sort_values("query_key").reset_index(drop=True))
    assert sorted(after["query"]) == ["boots", "coat"]
    assert spark.sql("SELECT count(*) FROM badinput.queries WHERE run_id = 'bad'").first()[0] == 0
