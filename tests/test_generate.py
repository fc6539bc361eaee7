"""The demo search-log generator: determinism, Zipf traffic, outcome invariants, hidden truth,
reformulations, typing fragments and zero-result searches."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import reduce

import pytest
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from querylens.demo import vocabulary as vocab
from querylens.demo.generator import (
    FILTER_COLUMNS,
    FRAGMENT_LEAD_SECONDS,
    KEY_FILTER_ORDER,
    KINDS,
    REFORMULATION_DELAY_SECONDS,
    REFORMULATIONS,
    Behaviour,
    generate_catalogue,
    generate_events,
)
from querylens.demo.ground_truth import ground_truth
from querylens.runtime.config import Config

N_QUERIES = 2_000
N_EVENTS = 100_000
SEED = 11

CATALOGUE_SCHEMA = [
    ("template_id", "bigint"), ("query", "string"), ("filter_gender", "string"),
    ("filter_category", "string"), ("filter_brand", "string"), ("filter_colour", "string"),
    ("filter_material", "string"), ("kind", "string"), ("true_category", "string"),
    ("true_brand", "string"), ("p_success", "double"), ("in_stock", "boolean"),
    ("reformulates", "bigint"), ("reformulation_kind", "string"), ("intended_query", "string"),
]
KEYS = ["query", *FILTER_COLUMNS]
EVENT_SCHEMA = [
    ("event_id", "bigint"), ("session_id", "string"), ("user_id", "string"),
    ("ts", "timestamp"), ("query", "string"), ("filter_gender", "string"),
    ("filter_category", "string"), ("filter_brand", "string"), ("filter_colour", "string"),
    ("filter_material", "string"), ("results_shown", "int"), ("clicks", "int"),
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
    """Events labelled with their template's kind and stock, joined on the query and filters."""
    kinds = catalogue.groupBy(*KEYS).agg(F.max("kind").alias("kind"),
                                         F.min("in_stock").alias("in_stock"))
    cond = [events[c].eqNullSafe(kinds[c]) for c in KEYS]
    return events.join(kinds, cond).select(events["*"], kinds["kind"], kinds["in_stock"])


def with_next(events: DataFrame) -> DataFrame:
    """Events with the next event of their session (`next_query`, `next_ts`) and `fragment`: the
    next search, at most `FRAGMENT_LEAD_SECONDS` later, strictly extends this one's text."""
    window = Window.partitionBy("session_id").orderBy("event_id")
    typed = F.lower(F.trim("query"))
    nxt = events.withColumn("typed", typed).select(
        "*", F.lead("typed").over(window).alias("next_typed"),
        F.lead("ts").over(window).alias("next_ts"),
    )
    gap = F.unix_timestamp("next_ts") - F.unix_timestamp("ts")
    fragment = (F.col("next_typed").startswith(F.col("typed"))
                & (F.col("next_typed") != F.col("typed")) & (gap <= FRAGMENT_LEAD_SECONDS[1]))
    return nxt.withColumn("fragment", F.coalesce(fragment, F.lit(False)))


def typed_rows(catalogue: DataFrame) -> DataFrame:
    return catalogue.where(F.col("reformulates").isNull())


def reformulation_pairs(events: DataFrame, catalogue: DataFrame) -> DataFrame:
    """Consecutive events of a session whose first is a typed template with a reformulation and
    whose second is that template's companion (same filters), with the gap in seconds."""
    window = Window.partitionBy("session_id").orderBy("event_id")
    prev = [F.lag(c).over(window).alias(f"prev_{c}") for c in (*KEYS, "ts", "clicks")]
    stepped = events.select("*", *prev)
    typed = typed_rows(catalogue).where(F.col("reformulation_kind").isNotNull())
    companions = catalogue.where(F.col("reformulates").isNotNull())
    pairs = typed.alias("a").join(companions.alias("b"),
                                  F.col("a.template_id") == F.col("b.reformulates"))
    pairs = pairs.select(*[F.col(f"a.{c}").alias(f"want_prev_{c}") for c in KEYS],
                         F.col("b.query").alias("want_query"),
                         F.col("a.reformulation_kind").alias("reformulation_kind"))
    pairs = pairs.dropDuplicates([*[f"want_prev_{c}" for c in KEYS], "want_query"])
    cond = [F.col(f"prev_{c}").eqNullSafe(F.col(f"want_prev_{c}")) for c in KEYS]
    cond += [F.col(c).eqNullSafe(F.col(f"want_prev_{c}")) for c in FILTER_COLUMNS]
    cond.append(F.col("query") == F.col("want_query"))
    gap = F.unix_timestamp("ts") - F.unix_timestamp("prev_ts")
    return stepped.join(pairs, reduce(operator.and_, cond)).select(
        "event_id", "prev_query", "query", "prev_clicks", "reformulation_kind", gap.alias("gap"),
    )


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
    stocked = F.when(F.col("in_stock"), F.col("p_success"))
    stats = typed_rows(catalogue).agg(
        F.count("*").alias("n"), F.countDistinct("template_id").alias("ids"),
        F.min("template_id").alias("lo"), F.max("template_id").alias("hi"),
        F.min(stocked).alias("p_lo"), F.max(stocked).alias("p_hi"),
    ).first()
    assert (stats.n, stats.ids, stats.lo, stats.hi) == (N_QUERIES, N_QUERIES, 0, N_QUERIES - 1)
    assert 0.0 < stats.p_lo and stats.p_hi < 1.0
    kinds = {r.kind for r in typed_rows(catalogue).select("kind").distinct().collect()}
    assert kinds == {k for k, _ in KINDS}
    assert catalogue.where(~F.col("in_stock") & (F.col("p_success") != 0)).count() == 0
    typed = typed_rows(catalogue).where(F.col("reformulation_kind").isNotNull())
    companions = catalogue.where(F.col("reformulates").isNotNull())
    linked = companions.join(typed.select(F.col("template_id").alias("reformulates")),
                             "reformulates")
    assert linked.where(F.col("template_id") != F.col("reformulates") + N_QUERIES).count() == 0
    assert linked.count() == companions.count() == typed.count() > 0
    assert {(r.kind, r.reformulation_kind) for r in typed.select(
        "kind", "reformulation_kind").distinct().collect()} == set(REFORMULATIONS.items())


def test_catalogue_is_deterministic_per_seed(spark: SparkSession, catalogue: DataFrame) -> None:
    again = generate_catalogue(spark, N_QUERIES, SEED).repartition(3)
    assert rows(again, "template_id") == rows(catalogue, "template_id")
    other = generate_catalogue(spark, N_QUERIES, SEED + 1)
    assert rows(other, "template_id") != rows(catalogue, "template_id")


def test_same_search_shares_the_truth(catalogue: DataFrame) -> None:
    search = F.concat_ws(" ", F.lower(F.trim("query")), *KEY_FILTER_ORDER)
    truth = F.struct("kind", "true_category", "true_brand", "p_success", "in_stock")
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
        | (F.col("results_shown") < 0)
        | (F.col("purchases") > F.col("add_to_bags"))
        | (F.col("add_to_bags") > F.col("clicks"))
        | ((F.col("clicks") > 0) & (F.col("results_shown") == 0))
    )
    assert bad.count() == 0
    agg = events.agg(
        F.avg((F.col("clicks") > 0).cast("double")).alias("clicked"),
        F.avg((F.col("purchases") > 0).cast("double")).alias("bought"),
        F.avg((F.col("results_shown") == 0).cast("double")).alias("zero"),
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
    searches = with_next(events).where(~F.col("fragment")).drop("fragment")
    labelled = with_kind(searches, catalogue)
    rates = {
        r.kind: (r.n, r.success, r.zero)
        for r in labelled.groupBy("kind").agg(
            F.count("*").alias("n"),
            F.avg((F.col("clicks") > 0).cast("double")).alias("success"),
            F.avg((F.col("results_shown") == 0).cast("double")).alias("zero"),
        ).collect()
    }
    assert sum(n for n, _, _ in rates.values()) == searches.count()
    good = rates["brand_category"][1]
    assert good > 0.6
    assert rates["misspelt_brand"][1] < 0.6 * good
    assert rates["unstocked_brand"][1] < 0.3 * good
    assert rates["vague"][1] < 0.6 * good
    assert rates["non_english"][1] < 0.75 * good
    assert rates["unstocked_brand"][2] > 0.5
    assert rates["brand_category"][2] < 0.1


def test_reformulations_fix_the_query(spark: SparkSession, catalogue: DataFrame) -> None:
    typed = typed_rows(catalogue).alias("a").join(
        catalogue.alias("b"), F.col("a.template_id") == F.col("b.reformulates"))
    got = typed.select("a.kind", "a.query", "a.true_category", "a.intended_query",
                       F.col("b.query").alias("next"), F.col("b.true_brand").alias("next_brand"),
                       F.col("b.true_category").alias("next_category")).collect()
    misspelt = dict(vocab.MISSPELLINGS)
    unstocked = set(vocab.UNSTOCKED_BRANDS)
    for r in got:
        query, nxt = r.query.lower().strip(), r.next.lower().strip()
        if r.kind == "misspelt_brand":
            wrong = max((m for m in misspelt if query.startswith(m)), key=len)
            assert nxt == misspelt[wrong] + query[len(wrong):] == r.intended_query.lower().strip()
        elif r.kind == "unstocked_brand":
            assert r.next_brand not in unstocked and r.next_category == r.true_category
            assert r.intended_query == r.query
        elif r.kind == "vague":
            assert r.true_category is None and r.next_category is not None
            assert nxt.startswith(query + " ") and r.intended_query == r.next
        else:
            assert len(nxt.split()) < len(query.split()) and r.intended_query == r.query
    truth = ground_truth(catalogue, Config())
    spelling = truth.where(F.col("reformulation_kind") == "spelling").collect()
    assert spelling and all(r.intended_query == r.reformulation_query for r in spelling)
    for r in spelling:
        assert r.true_brand in r.intended_query and r.intended_query != r.query
    plain = truth.where(F.col("reformulation_kind").isNull())
    assert plain.where(F.col("intended_query") != F.col("query")).count() == 0
    assert truth.count() == truth.select("query_key").distinct().count()


def test_reformulations_follow_failing_searches(events: DataFrame, catalogue: DataFrame) -> None:
    pairs = reformulation_pairs(events, catalogue).cache()
    kinds = {r.reformulation_kind: r["count"]
             for r in pairs.groupBy("reformulation_kind").count().collect()}
    assert set(kinds) == set(REFORMULATIONS.values()) and min(kinds.values()) >= 20
    lo, hi = REFORMULATION_DELAY_SECONDS
    gaps = pairs.agg(F.min("gap").alias("lo"), F.max("gap").alias("hi")).first()
    assert lo <= gaps.lo and gaps.hi <= hi
    # Searches for what the shop lacks always fail, so each with a next search in its session is
    # followed by its reformulation at reformulate_rate, less the chance it is a fragment
    # candidate or a reformulation candidate itself: between 85% of r * (1 - f) and r (+2%).
    lacking = typed_rows(catalogue).where(~F.col("in_stock"))
    window = Window.partitionBy("session_id").orderBy("event_id")
    followed = events.withColumn("has_next", F.lead("event_id").over(window).isNotNull())
    cond = [followed[c].eqNullSafe(lacking[c]) for c in KEYS]
    failing = followed.join(lacking.dropDuplicates(KEYS), cond) \
        .where("has_next").select(followed["event_id"])
    n_failing = failing.count()
    n_rewritten = pairs.join(failing.select((F.col("event_id") + 1).alias("event_id")),
                             "event_id").count()
    b = Behaviour()
    share = n_rewritten / n_failing
    assert n_failing > 1_000
    assert 0.85 * b.reformulate_rate * (1 - b.fragment_rate) < share < b.reformulate_rate + 0.02
    pairs.unpersist()


def test_typing_fragments_precede_their_search(events: DataFrame) -> None:
    flagged = with_next(events).cache()
    fragments = flagged.where("fragment")
    assert fragments.where((F.col("clicks") + F.col("add_to_bags") + F.col("purchases")) > 0) \
        .count() == 0
    n_fragments, n_followed = fragments.count(), flagged.where("next_ts is not null").count()
    # A followed event is a fragment with rate f * (1 - f), less the reformulations (< 10%).
    f = Behaviour().fragment_rate
    expected = f * (1 - f) * n_followed
    assert 0.8 * expected < n_fragments < 1.05 * expected
    flagged.unpersist()


def test_zero_results_only_where_the_shop_lacks_the_item(
    events: DataFrame, catalogue: DataFrame
) -> None:
    searches = with_next(events).where(~F.col("fragment")).drop("fragment")
    labelled = with_kind(searches, catalogue)
    assert labelled.count() == searches.count()
    zero = F.col("results_shown") == 0
    by_stock = {r.in_stock: (r.n, r.zero) for r in labelled.groupBy("in_stock").agg(
        F.count("*").alias("n"), F.sum(zero.cast("int")).alias("zero")).collect()}
    assert by_stock[True][1] == 0 and by_stock[False][1] == by_stock[False][0] > 100


def test_behaviour_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="fragment_rate must be in"):
        Behaviour(fragment_rate=1.5)


def test_no_reformulations_when_switched_off(spark: SparkSession, catalogue: DataFrame) -> None:
    quiet = generate_events(spark, catalogue, 20_000, SEED,
                            behaviour=Behaviour(reformulate_rate=0.0, fragment_rate=0.0))
    loud = generate_events(spark, catalogue, 20_000, SEED)
    assert reformulation_pairs(loud, catalogue).count() > 100
    assert reformulation_pairs(quiet, catalogue).count() < 10
    assert with_next(quiet).where("fragment").count() == 0
