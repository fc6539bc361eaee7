"""The demo search-log generator: determinism, Zipf traffic, outcome invariants, hidden truth."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from querylens.demo import vocabulary as vocab
from querylens.demo.generator import (
    FILTER_COLUMNS,
    KEY_FILTER_ORDER,
    KINDS,
    generate_catalogue,
    generate_events,
)

N_QUERIES = 2_000
N_EVENTS = 100_000
SEED = 11

CATALOGUE_SCHEMA = [
    ("template_id", "bigint"), ("query", "string"), ("filter_gender", "string"),
    ("filter_category", "string"), ("filter_brand", "string"), ("filter_colour", "string"),
    ("filter_material", "string"), ("kind", "string"), ("true_category", "string"),
    ("true_brand", "string"), ("p_success", "double"),
]
EVENT_SCHEMA = [
    ("event_id", "bigint"), ("session_id", "string"), ("user_id", "string"),
    ("ts", "timestamp"), ("query", "string"), ("filter_gender", "string"),
    ("filter_category", "string"), ("filter_brand", "string"), ("filter_colour", "string"),
    ("filter_material", "string"), ("n_results", "int"), ("clicks", "int"),
    ("add_to_bags", "int"), ("purchases", "int"),
]


@pytest.fixture(scope="module")
def catalogue(spark: SparkSession) -> Iterator[DataFrame]:
    df = generate_catalogue(spark, N_QUERIES, SEED).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def events(spark: SparkSession, catalogue: DataFrame) -> Iterator[DataFrame]:
    df = generate_events(spark, catalogue, N_EVENTS, SEED).cache()
    yield df
    df.unpersist()


def rows(df: DataFrame, key: str) -> list[tuple]:
    return [tuple(r) for r in df.orderBy(key).collect()]


def with_kind(events: DataFrame, catalogue: DataFrame) -> DataFrame:
    """Events labelled with their template's kind, joined on the query and filters."""
    keys = ["query", *FILTER_COLUMNS]
    kinds = catalogue.groupBy(*keys).agg(F.max("kind").alias("kind"))
    cond = [events[c].eqNullSafe(kinds[c]) for c in keys]
    return events.join(kinds, cond).select(events["*"], kinds["kind"])


def test_vocab_has_enough_real_brands_and_awkward_terms() -> None:
    brands = set(vocab.BRANDS)
    stocked = brands - set(vocab.UNSTOCKED_BRANDS)
    assert len(brands) == len(vocab.BRANDS) >= 150
    assert len(stocked) >= 150
    assert set(vocab.UNSTOCKED_BRANDS) < brands
    assert {"adidas", "nike", "gucci", "michael kors", "dolce & gabbana", "arc'teryx"} <= stocked
    misspelt = dict(vocab.MISSPELLINGS)
    assert {"micheal kors", "dolce gabanna", "addidas", "guci", "arcteryx"} <= set(misspelt)
    assert set(misspelt.values()) <= stocked and not set(misspelt) & brands
    foreign = {t for t, _, _ in vocab.NON_ENGLISH}
    assert {"sudadera", "zapatillas", "robe", "chaussures", "jupe", "vestido"} <= foreign
    assert {"sale", "new", "gift", "ombre", "trendy"} <= set(vocab.VAGUE_QUERIES)
    categories = {c for c, _ in vocab.CATEGORIES}
    assert {"dresses", "sneakers", "sunglasses", "watches", "bucket hats"} <= categories
    assert {c for _, _, c in vocab.NON_ENGLISH} <= categories
    assert {c for _, _, c in vocab.PRODUCT_LINES} <= categories
    assert {b for b, _, _ in vocab.PRODUCT_LINES} <= stocked
    assert set(vocab.GENDERS) == {g for _, g in vocab.GENDER_TERMS}


def test_catalogue_schema_and_ids(catalogue: DataFrame) -> None:
    assert catalogue.dtypes == CATALOGUE_SCHEMA
    stats = catalogue.agg(
        F.count("*").alias("n"), F.countDistinct("template_id").alias("ids"),
        F.min("template_id").alias("lo"), F.max("template_id").alias("hi"),
        F.min("p_success").alias("p_lo"), F.max("p_success").alias("p_hi"),
    ).first()
    assert (stats.n, stats.ids, stats.lo, stats.hi) == (N_QUERIES, N_QUERIES, 0, N_QUERIES - 1)
    assert 0.0 < stats.p_lo and stats.p_hi < 1.0
    kinds = {r.kind for r in catalogue.select("kind").distinct().collect()}
    assert kinds == {k for k, _ in KINDS}


def test_catalogue_is_deterministic_per_seed(spark: SparkSession, catalogue: DataFrame) -> None:
    again = generate_catalogue(spark, N_QUERIES, SEED).repartition(3)
    assert rows(again, "template_id") == rows(catalogue, "template_id")
    other = generate_catalogue(spark, N_QUERIES, SEED + 1)
    assert rows(other, "template_id") != rows(catalogue, "template_id")


def test_same_search_shares_the_truth(catalogue: DataFrame) -> None:
    search = F.concat_ws(" ", F.lower(F.trim("query")), *KEY_FILTER_ORDER)
    truth = F.struct("kind", "true_category", "true_brand", "p_success")
    spread = catalogue.groupBy(search.alias("search")).agg(
        F.countDistinct(truth).alias("truths"),
        F.count("*").alias("templates"),
    )
    stats = spread.agg(F.max("truths").alias("truths"), F.max("templates").alias("dups")).first()
    assert stats.truths == 1 and stats.dups > 1


def test_events_schema(events: DataFrame) -> None:
    assert events.dtypes == EVENT_SCHEMA
    assert events.count() == N_EVENTS
    assert events.select("event_id").distinct().count() == N_EVENTS


def test_events_independent_of_partitioning(spark: SparkSession, catalogue: DataFrame) -> None:
    one = generate_events(spark, catalogue, 20_000, SEED, num_partitions=1)
    many = generate_events(spark, catalogue.repartition(3), 20_000, SEED, num_partitions=7)
    assert rows(one, "event_id") == rows(many.repartition(5), "event_id")


def test_events_change_with_seed(spark: SparkSession, catalogue: DataFrame) -> None:
    a = generate_events(spark, catalogue, 5_000, SEED)
    b = generate_events(spark, catalogue, 5_000, SEED + 1)
    assert rows(a, "event_id") != rows(b, "event_id")


def test_template_traffic_is_zipf_like(events: DataFrame) -> None:
    counts = [r["count"] for r in events.groupBy("query", *FILTER_COLUMNS).count().collect()]
    counts.sort(reverse=True)
    top = sum(counts[: max(1, N_QUERIES // 100)])
    assert top / N_EVENTS > 0.3
    assert counts[0] > 50 * N_EVENTS / N_QUERIES


def test_outcome_invariants(events: DataFrame) -> None:
    bad = events.where(
        (F.col("purchases") < 0)
        | (F.col("n_results") < 0)
        | (F.col("purchases") > F.col("add_to_bags"))
        | (F.col("add_to_bags") > F.col("clicks"))
        | ((F.col("clicks") > 0) & (F.col("n_results") == 0))
    )
    assert bad.count() == 0
    agg = events.agg(
        F.avg((F.col("clicks") > 0).cast("double")).alias("clicked"),
        F.avg((F.col("purchases") > 0).cast("double")).alias("bought"),
        F.avg((F.col("n_results") == 0).cast("double")).alias("zero"),
    ).first()
    assert 0.3 < agg.clicked < 0.8
    assert 0.0 < agg.bought < agg.clicked
    assert 0.0 < agg.zero < 0.3


def test_sessions_are_ordered_and_in_range(events: DataFrame) -> None:
    start = datetime(2026, 10, 1)
    window = Window.partitionBy("session_id").orderBy("event_id")
    stepped = events.withColumn("prev", F.lag("ts").over(window))
    assert stepped.where(F.col("prev") >= F.col("ts")).count() == 0
    per_session = events.groupBy("session_id").agg(
        F.count("*").alias("n"), F.countDistinct("user_id").alias("users")
    )
    stats = per_session.agg(
        F.avg("n").alias("mean"), F.max("n").alias("longest"), F.max("users").alias("users")
    ).first()
    assert 2.0 < stats.mean < 6.0 and stats.longest > 5 and stats.users == 1
    span = events.agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
    assert start <= span.lo and span.hi < start + timedelta(days=28)


def test_hidden_mechanism_separates_kinds(events: DataFrame, catalogue: DataFrame) -> None:
    labelled = with_kind(events, catalogue)
    rates = {
        r.kind: (r.n, r.success, r.zero)
        for r in labelled.groupBy("kind").agg(
            F.count("*").alias("n"),
            F.avg((F.col("clicks") > 0).cast("double")).alias("success"),
            F.avg((F.col("n_results") == 0).cast("double")).alias("zero"),
        ).collect()
    }
    assert sum(n for n, _, _ in rates.values()) == N_EVENTS
    good = rates["brand_category"][1]
    assert good > 0.6
    assert rates["misspelt_brand"][1] < 0.6 * good
    assert rates["unstocked_brand"][1] < 0.3 * good
    assert rates["vague"][1] < 0.6 * good
    assert rates["non_english"][1] < 0.75 * good
    assert rates["unstocked_brand"][2] > 0.5
    assert rates["brand_category"][2] < 0.1
