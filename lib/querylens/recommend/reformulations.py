"""Reformulations mined from sessions: a failed search of query A followed, in the same session
and within the window, by a search of another query B."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from querylens.ingest.aggregate import read_events
from querylens.ingest.fragments import fold_typing_fragments
from querylens.ingest.normalize import with_normalized_query
from querylens.runtime.config import Config

SEARCH_COLUMNS = ("session_id", "ts", "query_key", "failed")


def session_searches(spark: SparkSession, config: Config) -> DataFrame:
    """The input's searches as ingest sees them (normalised, typing fragments folded away):
    session_id, ts, query_key and `failed` (no click, add-to-bag or purchase). Searches
    without a session, timestamp or query are left out: they cannot be ordered."""
    events = read_events(spark, config.input, {}, {})
    normalized = with_normalized_query(events, config.input.filter_columns, config.normalize)
    folded = fold_typing_fragments(normalized, config.input.typing_fragment_seconds)
    return searches_of(folded)


def searches_of(events: DataFrame) -> DataFrame:
    """Standard search events (query_key, session_id, ts, searches, counts) -> the columns of
    `SEARCH_COLUMNS`, one row per logged search."""
    interacted = F.col("clicks") + F.col("add_to_bags") + F.col("purchases") > 0
    return events.where(
        F.col("query_key").isNotNull() & F.col("ts").isNotNull()
        & F.col("session_id").isNotNull() & (F.col("searches") > 0)
    ).select("session_id", "ts", "query_key", (~interacted).alias("failed"))


def next_searches(searches: DataFrame, seconds: float) -> DataFrame:
    """Each failed search whose session's next search is of another query at most `seconds`
    later: session_id, ts, query_key, next_query_key (a window over sessions, no driver loop)."""
    order = Window.partitionBy("session_id").orderBy("ts", "query_key")
    lead_key, lead_ts = F.lead("query_key").over(order), F.lead("ts").over(order)
    within = F.unix_micros(lead_ts) - F.unix_micros(F.col("ts")) <= int(seconds * 1_000_000)
    nexts = searches.select(*SEARCH_COLUMNS, lead_key.alias("next_query_key"),
                            within.alias("within"))
    return nexts.where(F.col("failed") & F.col("within")
                       & (F.col("next_query_key") != F.col("query_key"))).select(
        "session_id", "ts", "query_key", "next_query_key")


def mine_reformulations(searches: DataFrame, seconds: float,
                        success: DataFrame | None = None) -> DataFrame:
    """Pairs (A -> B) with `pairs` (how many failed searches of A were followed by B),
    `failed_searches` (A's failed searches), `share` = pairs / failed_searches and, from
    `success` (query_key, success, smoothed_score), B's success label and smoothed score."""
    failures = searches.where("failed").groupBy("query_key").agg(
        F.count("*").alias("failed_searches"))
    pairs = next_searches(searches, seconds).groupBy("query_key", "next_query_key").agg(
        F.count("*").alias("pairs"), F.countDistinct("session_id").alias("sessions"))
    mined = pairs.join(failures, "query_key").withColumn(
        "share", F.col("pairs") / F.col("failed_searches"))
    if success is None:
        return mined.select("*", F.lit(None).cast("boolean").alias("next_success"),
                            F.lit(None).cast("double").alias("next_success_score"))
    nxt = success.select(F.col("query_key").alias("next_query_key"),
                         F.col("success").alias("next_success"),
                         F.col("smoothed_score").alias("next_success_score"))
    return mined.join(nxt, "next_query_key", "left")


def held_out(session: Column, share: float, seed: int) -> Column:
    """Whether a session is in the seeded hold-out share (a stable hash of its id)."""
    return F.pmod(F.xxhash64(session, F.lit(seed)), F.lit(1_000_000)) < int(share * 1_000_000)
