"""OpenSearch User Behavior Insights (UBI): bulk NDJSON -> one standard search event per
`query_id`, with its logged events counted and every document kept or dropped for a reason."""

from __future__ import annotations

from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from querylens.ingest.readers import (
    SPARK_ERRORS,
    parse_timestamp,
    require_path,
    spark_message,
    with_flags,
)
from querylens.runtime.config import InputConfig
from querylens.runtime.errors import InputError
from querylens.runtime.text import is_blank

QUERIES, EVENTS = "ubi_queries", "ubi_events"
PATH_KEYS = {QUERIES: "input.ubi_queries_path", EVENTS: "input.ubi_events_path"}
BULK_ACTIONS = ("index", "create")
CORRUPT = "_corrupt_record"
SCHEMAS = {
    QUERIES: "query_id string, user_query string, client_id string, session_id string, "
             f"application string, timestamp string, {CORRUPT} string",
    EVENTS: "query_id string, action_name string, client_id string, session_id string, "
            "user_query string, timestamp string, "
            "event_attributes struct<position: struct<ordinal: double>>, "
            f"{CORRUPT} string",
}
NO_APPLICATION = "(none)"
LATEST = "9999-12-31 00:00:00"


def read_ubi(
    spark: SparkSession, config: InputConfig, malformed: dict[str, int], facts: dict[str, Any]
) -> DataFrame:
    """Standard search events, one per UBI search (`query_id`), with the counts of its events.

    Fills `malformed` (lines that are not JSON, by path key) and `facts["ubi"]`: documents per
    index, duplicate query documents merged, conflicting texts, searches per application, the
    searches made from events by text (`input.ubi_attribute_by_text`) and the event ledger
    (read, attributed, unknown and null query_id, filtered application)."""
    try:
        docs = routed_documents(spark, config).cache()
        routed = {r["index"]: r["n"] for r in docs.groupBy("index").agg(F.count("*").alias("n"))
                  .collect()}
        queries, _ = parsed(docs, QUERIES, config, malformed)
        events, n_events = parsed(docs, EVENTS, config, malformed)
        by_text: dict[str, int] = {}
        if config.ubi_attribute_by_text:
            events, from_events = attributed_by_text(events, queries)
            by_text = text_attribution_counts(events, from_events)
            queries = queries.unionByName(from_events)
        searches, query_facts = merged_searches(queries, config)
        per_query = event_counts(events, config).cache()
        event_facts = event_ledger(n_events, per_query, searches, config)
    except SPARK_ERRORS as exc:
        raise InputError(f"cannot read UBI input: {spark_message(exc)}") from exc
    facts["ubi"] = {"documents_by_index": routed, **query_facts, **by_text,
                    "events": event_facts}
    wanted = config.ubi_applications
    kept = searches.where(F.col("application").isin(wanted)) if wanted else searches
    return with_flags(search_events(kept, per_query, config), config.filter_columns)


def routed_documents(spark: SparkSession, config: InputConfig) -> DataFrame:
    """Every non-blank, non-action line of the UBI files as (`value`, `index`): the `_index` of
    the bulk action line just before it, else the index of the path key naming its file; where
    both keys name the same files, a document with an `action_name` is an event."""
    paths = {QUERIES: config.ubi_queries_path, EVENTS: config.ubi_events_path}
    for index, path in paths.items():
        if not path:
            raise InputError(f"{PATH_KEYS[index]} must be set when input.format is 'ubi'")
        require_path(path, PATH_KEYS[index])
    frames = []
    for path in dict.fromkeys(p for p in paths.values() if p):
        named = [index for index, p in paths.items() if p == path]
        by_content = F.when(F.get_json_object("value", "$.action_name").isNotNull(), EVENTS)
        default = F.lit(named[0]) if len(named) == 1 else by_content.otherwise(QUERIES)
        frames.append(spark.read.text(path).select(
            "value",
            F.col("_metadata.file_path").alias("file"),
            F.col("_metadata.file_block_start").alias("block"),
            F.monotonically_increasing_id().alias("line"),
            default.alias("default_index"),
        ))
    lines = reduce(DataFrame.unionByName, frames).where(F.trim("value") != "")
    action = F.coalesce(*[F.get_json_object("value", f"$.{a}") for a in BULK_ACTIONS])
    target = F.coalesce(*[F.get_json_object("value", f"$.{a}._index") for a in BULK_ACTIONS])
    lines = lines.withColumn(
        "action_index", F.when(action.startswith("{"), F.coalesce(target, F.lit(""))))
    in_file = Window.partitionBy("file").orderBy("block", "line")
    after = F.lag("action_index").over(in_file)
    return lines.withColumn("after", after).where(F.col("action_index").isNull()).select(
        "value", F.coalesce(F.when(F.col("after") != "", F.col("after")),
                            F.col("default_index")).alias("index"))


def parsed(docs: DataFrame, index: str, config: InputConfig, malformed: dict[str, int]
           ) -> tuple[DataFrame, int]:
    """The documents routed to `index` parsed with its schema, and how many there are; lines
    that are not JSON objects are counted into `malformed` under the index's path key and
    dropped."""
    key = PATH_KEYS[index]
    rows = docs.where(F.col("index") == index).select(
        F.from_json("value", SCHEMAS[index], {"columnNameOfCorruptRecord": CORRUPT}).alias("d"))
    bad = F.col("d").isNull() | F.col(f"d.{CORRUPT}").isNotNull()
    counts = rows.agg(F.count("*").alias("n"), F.sum(bad.cast("long")).alias("bad")).first()
    assert counts is not None
    n, n_bad = counts["n"], counts["bad"] or 0
    if n_bad:
        malformed[key] = n_bad
    if n == n_bad:
        detail = f"no valid JSON line ({n_bad} malformed)" if n_bad else "no JSON documents"
        path = config.ubi_queries_path if index == QUERIES else config.ubi_events_path
        raise InputError(f"{key} {path} has {detail} for index {index}")
    return rows.where(~bad).select("d.*").drop(CORRUPT), n - n_bad


def attributed_by_text(events: DataFrame, queries: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Events whose `query_id` is null or names no query document but which carry their own
    `user_query`, moved to a search of that text: one per (query_id, else session, else
    client; text), timestamped at its first event. Returns the events (`by_text` marks the
    moved ones) and the query documents of those searches."""
    known = queries.where(F.col("query_id").isNotNull()).select("query_id").distinct() \
        .withColumn("known", F.lit(True))
    orphan = F.col("known").isNull() & ~is_blank(F.col("user_query"))
    owner = F.coalesce(F.col("query_id"), F.col("session_id"), F.col("client_id"), F.lit(""))
    text_id = F.concat(F.lit("\u0000text:"), owner, F.lit("\u0000"), F.col("user_query"))
    events = events.join(known, "query_id", "left").withColumn("by_text", orphan) \
        .withColumn("query_id", F.when(orphan, text_id).otherwise(F.col("query_id"))) \
        .drop("known")
    documents = events.where("by_text").groupBy("query_id").agg(
        F.first("user_query").alias("user_query"),
        F.first("client_id", ignorenulls=True).alias("client_id"),
        F.first("session_id", ignorenulls=True).alias("session_id"),
        F.lit(None).cast("string").alias("application"),
        F.min_by("timestamp", F.coalesce(parse_timestamp(F.col("timestamp")),
                                         F.lit(LATEST).cast("timestamp"))).alias("timestamp"),
    )
    return events, documents.select(*queries.columns)


def text_attribution_counts(events: DataFrame, from_events: DataFrame) -> dict[str, int]:
    """How many events were attributed by their own text, and to how many searches."""
    moved = events.agg(F.sum(F.col("by_text").cast("long")).alias("n")).first()
    assert moved is not None
    return {"events_attributed_by_text": moved["n"] or 0,
            "searches_from_events": from_events.count()}


def merged_searches(queries: DataFrame, config: InputConfig) -> tuple[DataFrame, dict[str, Any]]:
    """One row per `query_id` (a document without one is a search of its own): the non-blank
    text of its earliest document (ties: the smallest text), its earliest timestamp (or an
    unreadable one, to be flagged) and its first client, session and application."""
    ts = parse_timestamp(F.col("timestamp"))
    search_id = F.coalesce(F.col("query_id"),
                           F.concat(F.lit("\u0000"),
                                    F.monotonically_increasing_id().cast("string")))
    first_text = F.struct(is_blank(F.col("user_query")).cast("int"),
                          F.coalesce(ts, F.lit(LATEST).cast("timestamp")), F.col("user_query"))
    unreadable = F.when(ts.isNull(), F.col("timestamp"))
    searches = queries.withColumn("search_id", search_id).groupBy("search_id").agg(
        F.first("query_id", ignorenulls=True).alias("query_id"),
        F.min_by("user_query", first_text).alias("user_query"),
        F.count_distinct(F.when(~is_blank(F.col("user_query")), F.col("user_query")))
        .alias("texts"),
        F.count("*").alias("documents"),
        F.coalesce(F.min(ts).cast("string"), F.first(unreadable, ignorenulls=True)).alias("ts"),
        *[F.first(c, ignorenulls=True).alias(c) for c in ("client_id", "session_id")],
        F.coalesce(F.first("application", ignorenulls=True), F.lit(NO_APPLICATION))
        .alias("application"),
    ).cache()
    by_application = {r["application"]: r["n"] for r in searches.groupBy("application")
                      .agg(F.count("*").alias("n")).collect()}
    totals = searches.agg(
        F.sum("documents").alias("documents"),
        F.count("*").alias("searches"),
        F.sum((F.col("texts") > 1).cast("long")).alias("conflicting"),
    ).first()
    assert totals is not None
    wanted = config.ubi_applications
    facts = {
        "query_documents": totals["documents"],
        "searches": totals["searches"],
        "duplicate_query_documents": totals["documents"] - totals["searches"],
        "query_ids_with_conflicting_texts": totals["conflicting"],
        "searches_by_application": by_application,
        "filtered_application": sum(n for app, n in by_application.items()
                                    if wanted and app not in wanted),
    }
    return searches, facts


def event_counts(events: DataFrame, config: InputConfig) -> DataFrame:
    """Per `query_id`: its events, clicks, add-to-bags, purchases, impressions, clicks with a
    position and their position sum, and the first session named."""
    action = F.col("action_name")
    ordinal = F.col("event_attributes.position.ordinal")
    clicked = action.isin(config.ubi_click_actions)

    def counted(actions: list[str]) -> Column:
        return F.sum(action.isin(actions).cast("long"))

    return events.where(F.col("query_id").isNotNull()).groupBy("query_id").agg(
        F.count("*").alias("attributed_events"),
        counted(config.ubi_click_actions).alias("clicks"),
        counted(config.ubi_add_to_bag_actions).alias("add_to_bags"),
        counted(config.ubi_purchase_actions).alias("purchases"),
        counted(config.ubi_impression_actions).alias("impressions"),
        F.sum((clicked & ordinal.isNotNull()).cast("long")).alias("positioned_clicks"),
        F.sum(F.when(clicked, ordinal)).alias("click_position_sum"),
        F.first("session_id", ignorenulls=True).alias("event_session_id"),
    )


def event_ledger(
    read: int, per_query: DataFrame, searches: DataFrame, config: InputConfig
) -> dict[str, int]:
    """The `read` events, and how many name no query_id, an unknown one, or a search of an
    application left out; the rest belong to searches that ingest keeps or drops."""
    known = searches.select("query_id", "application").where(F.col("query_id").isNotNull())
    wanted = config.ubi_applications
    left_out = F.col("application").isNotNull() & (
        ~F.col("application").isin(wanted) if wanted else F.lit(False))
    n = F.col("attributed_events")
    totals = per_query.join(known, "query_id", "left").agg(
        F.sum(n).alias("with_id"),
        F.sum(F.when(F.col("application").isNull(), n)).alias("unknown"),
        F.sum(F.when(left_out, n)).alias("filtered"),
    ).first()
    assert totals is not None
    with_id, unknown, filtered = (totals[c] or 0 for c in ("with_id", "unknown", "filtered"))
    return {
        "read": read,
        "null_query_id": read - with_id,
        "unknown_query_id": unknown,
        "filtered_application": filtered,
        "of_searches": with_id - unknown - filtered,
    }


def search_events(searches: DataFrame, per_query: DataFrame, config: InputConfig) -> DataFrame:
    """Searches as standard events: the query's session (else its events' first, else the
    client), the client (else the session) as the actor, and its event counts."""
    joined = searches.join(per_query, "query_id", "left")
    return joined.select(
        F.col("user_query").alias("query"),
        F.coalesce("session_id", "event_session_id", "client_id").alias("session_id"),
        F.coalesce("client_id", "session_id", "event_session_id").alias("actor"),
        "ts",
        *[F.coalesce(F.col(c), F.lit(0)).alias(c) for c in
          ("clicks", "add_to_bags", "purchases", "impressions", "positioned_clicks",
           "attributed_events")],
        "click_position_sum",
        *[F.lit(None).cast("string").alias(c) for c in config.filter_columns],
    )
