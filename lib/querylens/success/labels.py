"""Success labels: interaction rates discounted by failure evidence, shrunk toward the cluster.

Interaction score. With `unit="search"` each interaction kind contributes the share of the
query's searches that had at least one such event (`searches_with_click / n_searches`, ...);
with `unit="session"` it is events per session capped at 1 (`min(clicks / n_sessions, 1)`,
...). The interaction score is the weighted mean of the three rates, in [0, 1]; support is the
number of searches (or sessions).

Failure evidence. What came next: the share of the query's searches that the same session
reformulated (its next search, at most `input.reformulation_seconds` later, is another query;
`reformulated_searches / n_searches`) and the share that showed no result
(`results_shown = 0`; `zero_result_searches / n_searches`). The score is
`interaction * (1 - min(1, reformulation_weight * r + zero_result_weight * z))`: by default a
zero-result search counts as a full failure and a reformulated one as half a failure, so a
query whose searches all showed nothing scores 0 whatever was clicked. Queries tables without
those columns (ingest before they existed) read them as 0.

Smoothing. A Beta prior with mean m (the cluster's search-weighted mean score, or the global
one for a query without a cluster) and strength k pseudo-searches gives the posterior mean
`(score * n + k * m) / (n + k)`. Queries with support below `min_support` keep that smoothed
score but are flagged `low_support` and get no label (`success` is null).

Threshold. `threshold` when set; otherwise the `threshold_quantile` quantile (default: the
median) of the smoothed scores of well-supported queries, so the rule adapts to the site's
interaction rates. A query also needs some interaction at all (score > 0) to be a success.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from querylens.runtime.config import SuccessConfig
from querylens.runtime.errors import DataError
from querylens.success.metrics import wilson_columns

log = logging.getLogger("querylens")

REQUIRED = ("query_key", "n_searches", "n_sessions", "clicks", "add_to_bags", "purchases",
            "searches_with_click", "searches_with_add_to_bag", "searches_with_purchase")
EVIDENCE = ("reformulated_searches", "zero_result_searches")


@dataclass(frozen=True)
class LabelStats:
    queries: int
    labelled: int
    successful: int
    low_support: int
    threshold: float | None
    problem: str | None
    min_support: int = 0
    with_failure_evidence: int = 0

    @property
    def unlabelled(self) -> int:
        return self.queries - self.labelled


def require_columns(df: DataFrame, columns: tuple[str, ...], name: str) -> None:
    """Raise naming the first of `columns` missing from `df`."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{name} lacks column {missing[0]}; it has {', '.join(df.columns)}")


def rate(count: str, denominator: Column, capped: bool) -> Column:
    value = F.coalesce(F.col(count), F.lit(0)).cast("double") / denominator
    return F.least(value, F.lit(1.0)) if capped else value


def evidence_rate(queries: DataFrame, column: str) -> Column:
    """`column` per search of the query, in [0, 1]; 0 where `queries` lacks the column."""
    if column not in queries.columns:
        return F.lit(0.0)
    return rate(column, F.greatest(F.col("n_searches"), F.lit(1)).cast("double"), True)


def success_scores(queries: DataFrame, config: SuccessConfig) -> DataFrame:
    """query_key, support, the weighted interaction rate `interaction_score`, the failure
    evidence rates and `success_score`, the interaction score discounted by that evidence."""
    require_columns(queries, REQUIRED, "queries")
    if config.unit == "search":
        support = F.col("n_searches")
        parts = [("searches_with_click", config.click_weight),
                 ("searches_with_add_to_bag", config.add_to_bag_weight),
                 ("searches_with_purchase", config.purchase_weight)]
    else:
        support = F.col("n_sessions")
        parts = [("clicks", config.click_weight), ("add_to_bags", config.add_to_bag_weight),
                 ("purchases", config.purchase_weight)]
    total = config.click_weight + config.add_to_bag_weight + config.purchase_weight
    denominator = F.greatest(support, F.lit(1)).cast("double")
    weighted = sum((rate(c, denominator, config.unit == "session") * w for c, w in parts),
                   F.lit(0.0))
    failure = F.least(F.lit(1.0), F.col("reformulation_rate") * config.reformulation_weight
                      + F.col("zero_result_rate") * config.zero_result_weight)
    return queries.select(
        "query_key",
        F.coalesce(support, F.lit(0)).cast("long").alias("support"),
        F.when(support > 0, weighted / total).otherwise(F.lit(0.0)).alias("interaction_score"),
        *[evidence_rate(queries, c).alias(name) for c, name in
          zip(EVIDENCE, ("reformulation_rate", "zero_result_rate"), strict=True)],
    ).withColumn("success_score", F.col("interaction_score") * (F.lit(1.0) - failure))


def choose_threshold(smoothed: DataFrame, config: SuccessConfig) -> float | None:
    """The configured threshold, else the quantile of well-supported smoothed scores."""
    if config.threshold is not None:
        return config.threshold
    supported = smoothed.where(~F.col("low_support"))
    values = supported.approxQuantile("smoothed_score", [config.threshold_quantile], 1e-4)
    return float(values[0]) if values else None


def label_queries(
    queries: DataFrame, assignments: DataFrame, config: SuccessConfig
) -> tuple[DataFrame, LabelStats]:
    """The `success_labels` rows (cached) and counts, with a `problem` when no labels exist."""
    require_columns(assignments, ("query_key", "cluster_id"), "cluster_assignments")
    scored = success_scores(queries, config).join(
        assignments.select("query_key", "cluster_id"), "query_key", "left"
    ).cache()
    weighted = F.sum(F.col("success_score") * F.col("support"))
    global_row = scored.agg(F.try_divide(weighted, F.sum("support")).alias("m")).first()
    global_mean = float(global_row["m"]) if global_row and global_row["m"] is not None else 0.0
    priors = scored.groupBy("cluster_id").agg(
        F.coalesce(F.try_divide(weighted, F.sum("support")), F.lit(global_mean)).alias("prior_mean")
    )
    k = float(config.prior_strength)
    smoothed = (
        scored.join(priors, scored["cluster_id"].eqNullSafe(priors["cluster_id"]), "left")
        .drop(priors["cluster_id"])
        .withColumn("prior_mean", F.coalesce("prior_mean", F.lit(global_mean)))
        .withColumn("smoothed_score", F.when(
            F.col("support") + F.lit(k) > 0,
            (F.col("success_score") * F.col("support") + F.lit(k) * F.col("prior_mean"))
            / (F.col("support") + F.lit(k)),
        ).otherwise(F.col("prior_mean")))
        .withColumn("low_support", F.col("support") < config.min_support)
        .cache()
    )
    threshold = choose_threshold(smoothed, config)
    success = (F.col("smoothed_score") >= F.lit(threshold)) & (F.col("success_score") > 0)
    labels = smoothed.select(
        "query_key", "cluster_id", "support", "interaction_score", "reformulation_rate",
        "zero_result_rate", "success_score", "prior_mean", "smoothed_score", "low_support",
        F.when(F.col("low_support") | F.lit(threshold is None), F.lit(None).cast("boolean"))
        .otherwise(success).alias("success"),
        F.lit(threshold).cast("double").alias("threshold"),
    ).cache()
    counts = labels.agg(
        F.count(F.lit(1)).alias("queries"),
        F.count("success").alias("labelled"),
        F.sum(F.col("success").cast("long")).alias("successful"),
        F.sum(F.col("low_support").cast("long")).alias("low_support"),
        F.max("success_score").alias("max_score"),
        F.count(F.when((F.col("reformulation_rate") > 0) | (F.col("zero_result_rate") > 0),
                       F.lit(1))).alias("with_evidence"),
    ).first()
    assert counts is not None
    smoothed.unpersist()
    scored.unpersist()
    stats = LabelStats(int(counts["queries"]), int(counts["labelled"]),
                       int(counts["successful"] or 0), int(counts["low_support"] or 0),
                       threshold, None, config.min_support, int(counts["with_evidence"]))
    problem = label_problem(stats, counts["max_score"], config)
    if problem:
        log.warning("success labels: %s", problem)
    return labels, replace(stats, problem=problem)


def label_problem(stats: LabelStats, max_score: float | None, config: SuccessConfig) -> str | None:
    """Why the labels cannot train a model (no interactions, no labels, one class), else None."""
    if stats.queries == 0:
        return "no queries to label"
    if not max_score:
        return (f"no interactions at all: every one of the {stats.queries} queries has success "
                "score 0, so every labelled query is a failure")
    if stats.labelled == 0:
        return (f"no query has support >= success.min_support={config.min_support}; all "
                f"{stats.queries} are low-support and unlabelled")
    if stats.successful in (0, stats.labelled):
        kind = "successes" if stats.successful else "failures"
        return (f"the {stats.labelled} labelled queries are all {kind} at threshold "
                f"{stats.threshold:.4g}; a single class cannot train or evaluate a classifier")
    return None


def cluster_success(labels: DataFrame, confidence: float = 0.95) -> DataFrame:
    """Per cluster: queries, labelled and successful counts, searches, mean score, success rate
    and its Wilson score interval at `confidence`.

    `success_rate` is the share of the cluster's labelled queries that are successes (null when
    none is labelled, as are its bounds); `mean_score` is the search-weighted mean score (the
    smoothing prior).
    """
    counts = labels.where(F.col("cluster_id").isNotNull()).groupBy("cluster_id").agg(
        F.count(F.lit(1)).alias("n_queries"),
        F.count("success").alias("n_labelled"),
        F.coalesce(F.sum(F.col("success").cast("long")), F.lit(0)).alias("n_successful"),
        F.sum("support").alias("support"),
        F.first("prior_mean").alias("mean_score"),
    )
    low, high = wilson_columns(F.col("n_successful"), F.col("n_labelled"), confidence)
    return counts.select(
        "*", F.try_divide(F.col("n_successful").cast("double"), F.col("n_labelled"))
        .alias("success_rate"), low.alias("success_rate_low"), high.alias("success_rate_high"))
