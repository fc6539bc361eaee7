"""Search events -> one row per normalised query, with the counts the run manifest records."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from querylens.ingest.fragments import fold_typing_fragments
from querylens.ingest.normalize import PII_PATTERNS, placeholder, with_normalized_query
from querylens.ingest.readers import (
    COUNT_COLUMNS,
    FLAGS,
    SPARK_ERRORS,
    describe,
    read_raw,
    spark_message,
    standardize,
    suspect_files,
)
from querylens.ingest.ubi import read_ubi
from querylens.runtime.config import InputConfig, NormalizeConfig
from querylens.runtime.errors import InputError

log = logging.getLogger("querylens")


@dataclass(frozen=True)
class IngestStats:
    """What ingest read, kept and dropped; `ledger` reconciles the search rows read (`read` =
    `kept` + each reason for dropping), `ubi["events"]` the UBI events read."""

    events: int
    skipped_empty_queries: int
    queries: int
    redacted_searches: dict[str, int]
    invalid_counts: int = 0
    negative_counts: int = 0
    invalid_timestamps: int = 0
    future_timestamps: int = 0
    malformed_lines: dict[str, int] = field(default_factory=dict)
    typing_fragments: int = 0
    ledger: dict[str, int] = field(default_factory=dict)
    ubi: dict[str, Any] = field(default_factory=dict)
    interactions: bool = True
    bad_row_samples: list[str] = field(default_factory=list)
    skipped_files: int = 0
    glob_files: int | None = None
    widened_columns: dict[str, Any] = field(default_factory=dict)


def read_events(
    spark: SparkSession, config: InputConfig, malformed: dict[str, int], facts: dict[str, Any]
) -> DataFrame:
    """Search events with standard columns (see `with_flags`). Malformed lines are dropped and
    counted into `malformed` by config key; the UBI reader records its counts in `facts`."""
    if config.format == "ubi":
        return read_ubi(spark, config, malformed, facts)
    samples = facts.setdefault("malformed_samples", [])
    return standardize(read_raw(spark, config, malformed, samples, facts), config, facts)


def aggregate_queries(events: DataFrame, config: InputConfig, normalize: NormalizeConfig
                      ) -> DataFrame:
    """One row per normalised query with its counts, typing fragments folded into the searches
    they complete; blank queries form the null-key row. `rows`, `fragments` and
    `attributed_events` are per-key tallies for the ledger."""
    normalized = with_normalized_query(events, config.filter_columns, normalize)
    folded = with_reformulations(
        fold_typing_fragments(normalized, config.typing_fragment_seconds),
        config.reformulation_seconds)
    searches = F.col("searches")

    def searches_with(count: str) -> Column:
        return F.sum(F.when(F.col(count) > 0, F.least(searches, F.col(count))).otherwise(0))

    return folded.groupBy("query_key").agg(
        F.first("query_norm").alias("query"),
        F.sum(searches).alias("n_searches"),
        F.countDistinct("session_id").alias("n_sessions"),
        *[F.sum(c).alias(c) for c in COUNT_COLUMNS],
        searches_with("clicks").alias("searches_with_click"),
        searches_with("add_to_bags").alias("searches_with_add_to_bag"),
        searches_with("purchases").alias("searches_with_purchase"),
        F.min("ts").alias("first_seen"),
        F.max("ts").alias("last_seen"),
        F.sum("impressions").alias("impressions"),
        (F.sum("click_position_sum") / F.sum("positioned_clicks")).alias("mean_click_position"),
        F.sum(F.col("reformulated").cast("long")).alias("reformulated_searches"),
        F.sum(F.when(F.col("results_shown") == 0, searches).otherwise(0))
        .alias("zero_result_searches"),
        *[F.sum(c).alias(c) for c in FLAGS],
        F.count("*").alias("rows"),
        F.sum(F.col("fragment").cast("long")).alias("fragments"),
        F.sum("attributed_events").alias("attributed_events"),
    )


def with_reformulations(events: DataFrame, seconds: float) -> DataFrame:
    """Events with a `reformulated` flag: a search (not a fragment or a blank query) whose
    session's next search is of another query at most `seconds` later. `seconds` 0 flags
    nothing; searches without a session or timestamp are never reformulated."""
    if seconds <= 0:
        return events.withColumn("reformulated", F.lit(False))
    searched = (F.col("query_key").isNotNull() & F.col("ts").isNotNull()
                & F.col("session_id").isNotNull() & (F.col("searches") > 0))
    session = F.coalesce(F.col("session_id"),
                         F.concat(F.lit("\u0000"), F.monotonically_increasing_id().cast("string")))
    order = Window.partitionBy("by").orderBy("searched", "ts", "query_key")
    next_key, next_ts = F.lead("query_key").over(order), F.lead("ts").over(order)
    reformulated = (F.col("searched") & (next_key != F.col("query_key"))
                    & (F.unix_micros(next_ts) - F.unix_micros(F.col("ts"))
                       <= int(seconds * 1_000_000)))
    return events.withColumn("searched", searched).withColumn("by", session).select(
        *events.columns, F.coalesce(reformulated, F.lit(False)).alias("reformulated"))


TALLIES = (*FLAGS, "rows", "fragments", "attributed_events")


def ingest(
    spark: SparkSession, input_config: InputConfig, normalize_config: NormalizeConfig
) -> tuple[DataFrame, IngestStats]:
    """Read events and return the cached `queries` DataFrame with counts for the manifest."""
    malformed: dict[str, int] = {}
    facts: dict[str, Any] = {}
    events = read_events(spark, input_config, malformed, facts)
    grouped = aggregate_queries(events, input_config, normalize_config).cache()
    blank = F.col("query_key").isNull()
    try:
        totals = grouped.agg(
            F.sum("rows").alias("rows"),
            F.sum(F.when(blank, F.col("rows"))).alias("blank"),
            F.sum(F.when(blank, F.col("attributed_events"))).alias("blank_events"),
            F.sum("fragments").alias("fragments"),
            F.sum(F.when(~blank, F.col("attributed_events"))).alias("attributed"),
            F.count("query_key").alias("queries"),
            *[F.sum(F.when(F.col("query").contains(placeholder(kind)), F.col("n_searches")))
              .alias(kind) for kind in PII_PATTERNS],
            *[F.sum(c).alias(c) for c in FLAGS],
        ).first()
    except SPARK_ERRORS as exc:
        grouped.unpersist()
        raise InputError(
            f"cannot read input {describe(input_config)}: {spark_message(exc)}"
            f"{suspect_files(input_config)}"
        ) from exc
    assert totals is not None
    if not totals["rows"]:
        raise InputError(f"input has no search events: {describe(input_config)}")
    if totals["queries"] == 0:
        raise InputError(f"input has no non-empty queries: {describe(input_config)}")
    counts = {c: int(totals[c] or 0) for c in ("rows", "blank", "blank_events", "fragments",
                                               "attributed")}
    stats = IngestStats(
        counts["rows"], counts["blank"], totals["queries"],
        {kind: totals[kind] or 0 for kind in PII_PATTERNS},
        malformed_lines=malformed,
        typing_fragments=counts["fragments"],
        ledger=search_ledger(input_config, counts, malformed, facts),
        ubi=with_event_ledger(facts.get("ubi", {}), counts, malformed),
        interactions=facts.get("interactions", True),
        bad_row_samples=facts.get("malformed_samples", []),
        skipped_files=facts.get("skipped_files", 0),
        glob_files=facts.get("glob_files"),
        widened_columns=facts.get("widened_columns", {}),
        **{c: int(totals[c] or 0) for c in FLAGS},
    )
    for line in ledger_lines(stats):
        log.info("%s", line)
    return grouped.where(F.col("query_key").isNotNull()).drop(*TALLIES), stats


def search_ledger(config: InputConfig, counts: dict[str, int], malformed: dict[str, int],
                  facts: dict[str, Any]) -> dict[str, int]:
    """Search rows (UBI: query documents) read = kept + bad rows + duplicates merged + filtered
    application + blank query + typing fragment."""
    ubi = facts.get("ubi", {})
    drops = {
        "bad_rows": malformed.get("input.ubi_queries_path" if config.format == "ubi"
                                  else "input.path", 0),
        "duplicate_query_documents": ubi.get("duplicate_query_documents", 0),
        "filtered_application": ubi.get("filtered_application", 0),
        "blank_query": counts["blank"],
        "typing_fragment": counts["fragments"],
    }
    kept = counts["rows"] - counts["blank"] - counts["fragments"]
    return {"read": kept + sum(drops.values()), "kept": kept, **drops}


def with_event_ledger(ubi: dict[str, Any], counts: dict[str, int], malformed: dict[str, int]
                      ) -> dict[str, Any]:
    """The UBI facts with the event ledger completed: events read (bad lines included) =
    attributed to kept searches + bad rows + null or unknown query_id + filtered application +
    of blank searches."""
    if not ubi:
        return {}
    events = dict(ubi["events"])
    parsed = events.pop("read")
    events.pop("of_searches")
    bad = malformed.get("input.ubi_events_path", 0)
    ledger = {"read": parsed + bad, "attributed": counts["attributed"], "bad_rows": bad,
              **events, "blank_query": counts["blank_events"]}
    return {**ubi, "events": ledger}


def ledger_lines(stats: IngestStats) -> list[str]:
    """The ledgers as log lines: 'ingest: 120 search rows read = 100 kept + 20 blank_query'."""
    lines = [ledger_line("search rows" if not stats.ubi else "UBI query documents", stats.ledger)]
    if stats.ubi:
        lines.append(ledger_line("UBI events", stats.ubi["events"]))
    return lines


def ledger_line(what: str, ledger: dict[str, int]) -> str:
    parts = [f"{n:,} {reason}" for reason, n in ledger.items() if reason != "read" and n]
    return f"ingest: {ledger['read']:,} {what} read = {' + '.join(parts) or '0'}"
