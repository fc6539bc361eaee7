"""Held-out evaluation: for failed searches of held-out sessions that the user reformulated to a
recommendable query, where that query ranks among suggestions built without those sessions;
on demo logs also what the suggestions recover of the generator's truth."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

Row = tuple[str, str, str, float]
SPLIT = "holdout"


def evaluation_cases(next_searches: DataFrame, candidates: DataFrame) -> DataFrame:
    """One row per held-out reformulation (query_key, target_key) whose next query is a
    recommendable candidate; `next_searches` is `reformulations.next_searches` of the held-out
    sessions."""
    wanted = candidates.select(F.col("rec_query_key").alias("next_query_key"))
    return next_searches.join(wanted, "next_query_key").select(
        "query_key", F.col("next_query_key").alias("target_key"))


def ranking_metrics(cases: DataFrame, suggestions: DataFrame, model: str) -> list[Row]:
    """hit@1, hit@5 and MRR of each case's target among the query's ranked suggestions (rank
    beyond the list: reciprocal rank 0), with `n_evaluated` cases."""
    ranks = suggestions.where(F.col("rank").isNotNull()).select(
        "query_key", F.col("rec_query_key").alias("target_key"), "rank")
    joined = cases.join(ranks, ["query_key", "target_key"], "left")
    rank = F.col("rank")
    got = joined.agg(
        F.count("*").alias("n"),
        F.avg(F.coalesce((rank == 1).cast("double"), F.lit(0.0))).alias("hit_at_1"),
        F.avg(F.coalesce((rank <= 5).cast("double"), F.lit(0.0))).alias("hit_at_5"),
        F.avg(F.coalesce(1.0 / rank, F.lit(0.0))).alias("mrr"),
        F.countDistinct("query_key").alias("queries")).first()
    if got is None or not got["n"]:
        return [(model, SPLIT, "n_evaluated", 0.0)]
    return [(model, SPLIT, "n_evaluated", float(got["n"])),
            (model, SPLIT, "n_queries", float(got["queries"])),
            *[(model, SPLIT, m, float(got[m])) for m in ("hit_at_1", "hit_at_5", "mrr")]]


def truth_table(raw: DataFrame, key_of: Column | None) -> DataFrame:
    """Per query_key from `demo_ground_truth`: mean true p, most frequent category, true brand,
    kind and (where the table has `intended_query` and `key_of` turns it into a key)
    `intended_key`."""
    intended = [F.first(key_of, ignorenulls=True).alias("intended_key")] \
        if key_of is not None and "intended_query" in raw.columns else \
        [F.lit(None).cast("string").alias("intended_key")]
    return raw.groupBy("query_key").agg(
        F.avg("p_success").alias("true_p"), F.mode("true_category").alias("true_category"),
        F.mode("true_brand").alias("true_brand"), F.mode("kind").alias("kind"), *intended)


def truth_metrics(suggestions: DataFrame, queries: DataFrame, truth: DataFrame,
                  model: str) -> list[Row]:
    """On demo logs, over the evaluated queries' suggestions: `intended_recovery` (share of
    queries with an intended query other than themselves whose suggestions include it),
    `same_category_share` and `higher_true_p_share` (over suggestion pairs), and
    `misspelt_brand_recall` (share of misspelt-brand queries whose suggestions include the
    brand's correct spelling); each with its size."""
    t = truth.select("query_key", "true_p", "true_category", "true_brand", "kind",
                     "intended_key")
    r = truth.select(F.col("query_key").alias("rec_query_key"), F.col("true_p").alias("rec_p"),
                     F.col("true_category").alias("rec_category"))
    served = suggestions.where(F.col("rank").isNotNull()).select(
        "query_key", "rec_query_key", "rec_query")
    pairs = served.join(t, "query_key").join(r, "rec_query_key", "left")
    both_cat = pairs.where(F.col("true_category").isNotNull() & F.col("rec_category").isNotNull())
    both_p = pairs.where(F.col("true_p").isNotNull() & F.col("rec_p").isNotNull())
    per_query = queries.select("query_key", "query").join(t, "query_key")
    hits = pairs.groupBy("query_key").agg(
        F.max((F.col("rec_query_key") == F.col("intended_key")).cast("int")).alias("intended"),
        F.max(F.col("rec_query").contains(F.col("true_brand")).cast("int")).alias("brand"))
    per_query = per_query.join(hits, "query_key", "left")
    intended = per_query.where(F.col("intended_key").isNotNull()
                               & (F.col("intended_key") != F.col("query_key")))
    misspelt = per_query.where((F.col("kind") == "misspelt_brand")
                               & F.col("true_brand").isNotNull())
    measured = [
        frame.select(F.lit(name).alias("metric"), value.cast("double").alias("v"))
        for name, frame, value in (
            ("intended_recovery", intended, F.coalesce(F.col("intended"), F.lit(0))),
            ("misspelt_brand_recall", misspelt, F.coalesce(F.col("brand"), F.lit(0))),
            ("same_category_share", both_cat, F.col("true_category") == F.col("rec_category")),
            ("higher_true_p_share", both_p, F.col("rec_p") > F.col("true_p")),
        )]
    union = reduce(lambda a, b: a.unionByName(b), measured)
    rows: list[Row] = []
    for got in union.groupBy("metric").agg(F.count("*").alias("n"),
                                           F.avg("v").alias("v")).collect():
        rows += [(model, f"{SPLIT}_truth", got["metric"], float(got["v"])),
                 (model, f"{SPLIT}_truth", f"{got['metric']}_n", float(got["n"]))]
    return sorted(rows)
