"""Search-as-you-type fragments: a search whose text the same client's next search extends."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def fold_typing_fragments(events: DataFrame, seconds: float) -> DataFrame:
    """Normalised events with a `fragment` flag. A fragment is a search with no click,
    add-to-bag or purchase whose typed text is a strict prefix of its actor's next search at
    most `seconds` later. It takes the key and text of the completed search its chain of
    fragments ends in, hands that search its counts (impressions, say), and adds no search
    (`searches` 0, `ts` null). `seconds` 0 folds nothing."""
    if seconds <= 0:
        return events.withColumn("fragment", F.lit(False))
    typed = F.regexp_replace(F.lower(F.trim("query")), r"\s+", " ")
    actor = F.coalesce(F.col("actor"),
                       F.concat(F.lit("\u0000"), F.monotonically_increasing_id().cast("string")))
    order = Window.partitionBy("by").orderBy("ts", F.length("typed"), "typed")
    after = order.rowsBetween(Window.currentRow, Window.unboundedFollowing)
    next_typed, next_ts = F.lead("typed").over(order), F.lead("ts").over(order)
    fragment = (
        F.col("query_key").isNotNull() & F.col("actor").isNotNull() & F.col("ts").isNotNull()
        & (F.col("clicks") + F.col("add_to_bags") + F.col("purchases") == 0)
        & (next_typed != F.col("typed")) & next_typed.startswith(F.col("typed"))
        & (F.unix_micros(next_ts) - F.unix_micros(F.col("ts")) <= int(seconds * 1_000_000))
    )
    flagged = events.withColumn("typed", typed).withColumn("by", actor) \
        .withColumn("fragment", F.coalesce(fragment, F.lit(False)))

    def completed(column: str) -> F.Column:
        return F.first(F.when(~F.col("fragment"), F.col(column)), ignorenulls=True).over(after)

    return flagged.select(
        *[c for c in events.columns if c not in ("query_key", "query_norm", "searches", "ts")],
        *[F.when(F.col("fragment"), completed(c)).otherwise(F.col(c)).alias(c)
          for c in ("query_key", "query_norm")],
        F.when(~F.col("fragment"), F.col("searches")).otherwise(0).cast("long").alias("searches"),
        F.when(~F.col("fragment"), F.col("ts")).alias("ts"),
        "fragment",
    )
