import json
from datetime import datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from querylens.ingest.aggregate import ingest
from querylens.ingest.normalize import normalize_text
from querylens.runtime.config import Config, NormalizeConfig, load_config
from querylens.runtime.errors import InputError
from querylens.runtime.text import is_blank, is_blank_text

FILTERS = ["filter_gender", "filter_brand", "filter_colour", "filter_material", "filter_category"]
COLUMNS = ["query", "session_id", "ts", "clicks", "add_to_bags", "purchases", *FILTERS]


def event(query, session, day, clicks=0, bags=0, buys=0, gender=None, category=None):
    return (query, session, datetime(2026, 10, day), clicks, bags, buys,
            gender, None, None, None, category)


EVENTS = [
    event("Adidas  Campus", "s1", 1, 2, 1, 0, gender="Women", category="Sneakers"),
    event("adidas campus", "s2", 3, 0, 0, 0, gender="women", category="sneakers"),
    event("ａｄｉｄａｓ campus ", "s2", 2, 1, 1, 1, gender="WOMEN", category="sneakers"),
    event("sudadera", "s3", 5, 0),
    event("sudadera", "s3", 6, 3, 0, 0),
    event(None, "s4", 1),
    event("   ", "s4", 1),
    event("\t\n", "s5", 2),
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Adidas\tCAMPUS  ", "adidas campus"),
        ("ｎｉｋｅ", "nike"),
        ("Ｄolce\u00a0&\u00a0Gabbana", "dolce & gabbana"),
        ("x\x00y", "x y"),
        ("   ", None),
        (None, None),
        ("émoji 👗", "émoji 👗"),
    ],
)
def test_normalize_text(raw: str | None, expected: str | None) -> None:
    assert normalize_text(raw, NormalizeConfig()) == expected


def test_normalize_truncates() -> None:
    assert normalize_text("a" * 2000, NormalizeConfig(max_chars=10)) == "a" * 10


def config_for(base: Config, **input_settings: object) -> Config:
    sets = [f"input.{k}={v}" for k, v in input_settings.items()]
    return load_config(None, [f"run.warehouse_dir={base.run.warehouse_dir}",
                              f"run.metastore_dir={base.run.metastore_dir}", *sets])


def check_aggregates(spark: SparkSession, config: Config) -> None:
    queries, stats = ingest(spark, config.input, config.normalize)
    rows = {r["query"]: r for r in queries.collect()}
    assert stats.events == 8
    assert stats.skipped_empty_queries == 3
    assert stats.queries == 2
    assert set(rows) == {"adidas campus women sneakers", "sudadera"}
    adidas = rows["adidas campus women sneakers"]
    assert (adidas.n_searches, adidas.n_sessions) == (3, 2)
    assert (adidas.clicks, adidas.add_to_bags, adidas.purchases) == (3, 2, 1)
    assert (adidas.searches_with_click, adidas.searches_with_purchase) == (2, 1)
    assert adidas.first_seen == datetime(2026, 10, 1)
    assert adidas.last_seen == datetime(2026, 10, 3)
    sudadera = rows["sudadera"]
    assert (sudadera.n_searches, sudadera.n_sessions, sudadera.clicks) == (2, 1, 3)
    assert len(adidas.query_key) == 16 and adidas.query_key != sudadera.query_key


def events_df(spark: SparkSession):
    schema = ("query string, session_id string, ts timestamp, clicks int, add_to_bags int, "
              "purchases int, " + ", ".join(f"{f} string" for f in FILTERS))
    return spark.createDataFrame(EVENTS, schema)


def test_parquet(spark: SparkSession, config: Config, tmp_path: Path) -> None:
    events_df(spark).write.parquet(str(tmp_path / "events"))
    check_aggregates(spark, config_for(config, format="parquet", path=tmp_path / "events"))


def test_csv_with_mapped_columns(spark: SparkSession, config: Config, tmp_path: Path) -> None:
    renamed = events_df(spark).withColumnRenamed("query", "search_term")
    renamed.write.option("header", True).csv(str(tmp_path / "csv"))
    cfg = load_config(None, ["input.format=csv", f"input.path={tmp_path / 'csv'}",
                             "input.columns.query=search_term"])
    check_aggregates(spark, cfg)


def test_catalog_table(spark: SparkSession, config: Config) -> None:
    events_df(spark).write.mode("overwrite").saveAsTable("default.raw_search_events")
    check_aggregates(spark, config_for(config, format="table", table="default.raw_search_events"))


def write_ubi(tmp_path: Path) -> tuple[Path, Path]:
    queries, actions = [], []
    for i, (query, session, ts, clicks, bags, buys, gender, *_rest, category) in enumerate(EVENTS):
        text = " ".join(p for p in [query, gender, category] if p) if query and query.strip() \
            else query
        queries.append({"query_id": f"q{i}", "user_query": text, "client_id": session,
                        "timestamp": ts.isoformat(), "query_response_hit_ids": ["p1", "p2"]})
        for name, n in [("click", clicks), ("add_to_cart", bags), ("purchase", buys),
                        ("product_hover", 2)]:
            actions += [{"action_name": name, "query_id": f"q{i}", "client_id": session,
                         "timestamp": ts.isoformat()}] * n
    q_path, e_path = tmp_path / "ubi_queries.ndjson", tmp_path / "ubi_events.ndjson"
    q_path.write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    bulk = []
    for i, doc in enumerate(actions):
        bulk += [json.dumps({"index": {"_index": "ubi_events", "_id": str(i)}}), json.dumps(doc)]
    e_path.write_text("\n".join(bulk) + "\n")
    return q_path, e_path


def test_ubi_ndjson_with_bulk_layout(spark: SparkSession, config: Config, tmp_path: Path) -> None:
    q_path, e_path = write_ubi(tmp_path)
    cfg = config_for(config, format="ubi", ubi_queries_path=q_path, ubi_events_path=e_path)
    check_aggregates(spark, cfg)


def test_missing_mapped_column_is_named(spark: SparkSession, config: Config,
                                        tmp_path: Path) -> None:
    events_df(spark).drop("clicks").write.parquet(str(tmp_path / "events"))
    cfg = config_for(config, format="parquet", path=tmp_path / "events",
                     **{"columns.clicks": "n_clicks"})
    with pytest.raises(InputError, match=r"n_clicks \(input.columns.clicks\)"):
        ingest(spark, cfg.input, cfg.normalize)


def test_missing_path_and_table(spark: SparkSession, config: Config, tmp_path: Path) -> None:
    cfg = config_for(config, format="parquet", path=tmp_path / "absent")
    with pytest.raises(InputError, match="input.path not found"):
        ingest(spark, cfg.input, cfg.normalize)
    cfg = config_for(config, format="table", table="default.no_such_table")
    with pytest.raises(InputError, match="input table not found: default.no_such_table"):
        ingest(spark, cfg.input, cfg.normalize)


def test_empty_and_all_blank_input(spark: SparkSession, config: Config, tmp_path: Path) -> None:
    events_df(spark).limit(0).write.parquet(str(tmp_path / "empty"))
    cfg = config_for(config, format="parquet", path=tmp_path / "empty")
    with pytest.raises(InputError, match="no search events"):
        ingest(spark, cfg.input, cfg.normalize)
    events_df(spark).where("query IS NULL OR trim(query) = ''").write.parquet(
        str(tmp_path / "blank"))
    cfg = config_for(config, format="parquet", path=tmp_path / "blank")
    with pytest.raises(InputError, match="no non-empty queries"):
        ingest(spark, cfg.input, cfg.normalize)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("dress for jane.doe+shop@example.co.uk", "dress for [email]"),
        ("call 0207 946 0958 about boots", "call [phone] about boots"),
        ("+44 (20) 7946-0958", "[phone]"),
        ("card 4111 1111 1111 1111 gucci", "card [card] gucci"),
        ("4111-1111-1111-1111", "[card]"),
        ("size 10 uk 8 levi 501", "size 10 uk 8 levi 501"),
        ("nike air max 2090 90", "nike air max 2090 90"),
    ],
)
def test_personal_data_is_redacted(raw: str, expected: str) -> None:
    assert normalize_text(raw, NormalizeConfig()) == expected
    assert normalize_text(raw, NormalizeConfig(redact_pii=False)) == raw.lower()


def test_redactions_are_counted(spark: SparkSession, config: Config, tmp_path: Path) -> None:
    extra = [event("bag for ann@example.com", "s9", 1), event("bag for bob@example.org", "s9", 2),
             event("ring me 07911 123456", "s9", 3)]
    schema = events_df(spark).schema
    spark.createDataFrame(EVENTS + extra, schema).write.parquet(str(tmp_path / "pii"))
    cfg = config_for(config, format="parquet", path=tmp_path / "pii")
    queries, stats = ingest(spark, cfg.input, cfg.normalize)
    assert stats.redacted_searches == {"email": 2, "card": 0, "phone": 1}
    texts = {r.query for r in queries.collect()}
    assert "bag for [email]" in texts and not any("@" in t for t in texts)


def test_blank_column_agrees_with_python_isspace(spark: SparkSession) -> None:
    texts = [None, "", " ", "\t\n", "\u3000", "\u00a0", "\x1c\x1f", "\u2028", "a", " a ", "\u200b"]
    flags = spark.createDataFrame([(t,) for t in texts], "t string").select(
        is_blank(F.col("t")).alias("blank")).collect()
    assert [r.blank for r in flags] == [is_blank_text(t) for t in texts]
    assert [r.blank for r in flags] == [True] * 8 + [False] * 3
