"""The blend: candidates of every source merged per (failing query, suggestion), restricted to
recommendable queries, scored, made diverse, ranked and explained, all in Spark."""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from querylens.runtime.config import RecommendConfig
from querylens.runtime.specs import TABLES

SOURCES = ("reformulation", "lexical", "semantic")
SOURCE_SCORE = {"reformulation": "reformulation_share", "lexical": "lexical_similarity",
                "semantic": "similarity"}
SIZE_TOKEN = (r"\b(\d+([.,]\d+)?[a-z]{0,3}|x{0,3}s|x{0,4}l|m|one size|size|sizes|uk|eu|us)\b")
TARGET_COLUMNS = ("query_key", "query", "cluster_id", "cluster_trusted", "label_success",
                  "p_success")
CANDIDATE_COLUMNS = ("rec_query_key", "rec_query", "rec_cluster_id", "rec_cluster_trusted",
                     "rec_cluster_success_rate", "rec_success_rate", "rec_support")
SOURCE_COLUMNS = {
    "reformulation": ("reformulation_pairs", "reformulation_failed", "reformulation_share"),
    "lexical": ("lexical_similarity", "lexical_note"),
    "semantic": ("similarity", "cluster_distance", "search"),
}
SOURCE_TYPES = {"reformulation_pairs": "bigint", "reformulation_failed": "bigint",
                "reformulation_share": "double", "lexical_similarity": "double",
                "lexical_note": "string", "similarity": "double", "cluster_distance": "double",
                "search": "string"}


@dataclass(frozen=True)
class Weights:
    """score = reformulation * sqrt(share) + lexical * lexical similarity + semantic * cosine
    + success * the suggestion's smoothed success score (a missing source counts 0); the square
    root lets a reformulation that followed a tenth of the failures outrank a close cosine."""

    reformulation: float
    lexical: float
    semantic: float
    success: float

    @classmethod
    def of(cls, config: RecommendConfig) -> Weights:
        return cls(config.weight_reformulation, config.weight_lexical, config.weight_semantic,
                   config.weight_success)

    @classmethod
    def only(cls, source: str) -> Weights:
        """Rank by one source's own score."""
        return cls(float(source == "reformulation"), float(source == "lexical"),
                   float(source == "semantic"), 0.0)

    def score(self) -> Column:
        parts = [(self.reformulation, F.sqrt("reformulation_share")),
                 (self.lexical, F.col("lexical_similarity")), (self.semantic, F.col("similarity")),
                 (self.success, F.col("rec_success_rate"))]
        return reduce(lambda a, b: a + b,
                      [F.lit(w) * F.coalesce(c, F.lit(0.0)) for w, c in parts])


def canonical(column: Column) -> Column:
    """The query without size and number tokens, spaces squeezed ("levis 501 jeans 32" ->
    "levis jeans"); the query itself when nothing else is left."""
    bare = F.trim(F.regexp_replace(F.regexp_replace(column, SIZE_TOKEN, " "), r"\s+", " "))
    return F.when(bare == "", column).otherwise(bare)


def merged_sources(sources: dict[str, DataFrame]) -> DataFrame:
    """One row per (query_key, rec_query_key) with every source's columns (null where the
    source did not propose the pair) and `in_<source>` flags."""
    def typed(name: str, df: DataFrame | None) -> list[Column]:
        flag = F.lit(df is not None).alias(f"in_{name}")
        return [(F.col(c) if df is not None else F.lit(None)).cast(SOURCE_TYPES[c]).alias(c)
                for c in SOURCE_COLUMNS[name]] + [flag]

    framed = [df.select("query_key", "rec_query_key",
                        *[c for s in SOURCES for c in typed(s, df if s == name else None)])
              for name, df in sources.items()]
    union = reduce(lambda a, b: a.unionByName(b), framed)
    names = [c for s in SOURCES for c in (*SOURCE_COLUMNS[s], f"in_{s}")]
    return union.groupBy("query_key", "rec_query_key").agg(*[F.max(c).alias(c) for c in names])


def blend(targets: DataFrame, candidates: DataFrame, sources: dict[str, DataFrame],
          weights: Weights, config: RecommendConfig, diverse: bool = True) -> DataFrame:
    """`recommendations` rows: per target (columns `TARGET_COLUMNS`) its top
    `config.n_recommendations` suggestions among `candidates` (`CANDIDATE_COLUMNS`: the only
    recommendable queries) proposed by `sources` (name -> query_key, rec_query_key and the
    source's `SOURCE_COLUMNS`), by `weights.score()`, never the query itself nor (with
    `diverse`) two suggestions that differ only by size or number tokens. A target without any
    suggestion gets one row with a null rank."""
    pairs = merged_sources(sources).join(candidates.select(*CANDIDATE_COLUMNS), "rec_query_key")
    scored = pairs.join(targets.select(*TARGET_COLUMNS), "query_key").where(
        F.col("rec_query_key") != F.col("query_key")).withColumn("score", weights.score())
    if diverse:
        scored = scored.withColumn("form", canonical(F.col("rec_query")))
        best = Window.partitionBy("query_key", "form").orderBy(F.desc("score"), "rec_query_key")
        scored = scored.withColumn("n", F.row_number().over(best)).where("n = 1")
    order = Window.partitionBy("query_key").orderBy(F.desc("score"), "rec_query_key")
    ranked = scored.withColumn("rank", F.row_number().over(order)).where(
        F.col("rank") <= config.n_recommendations)
    empty = targets.select(*TARGET_COLUMNS).join(ranked.select("query_key"), "query_key",
                                                 "left_anti")
    rows = ranked.unionByName(empty, allowMissingColumns=True)
    return rows.select(*[output_column(name, kind, list(sources), config)
                         for name, kind in TABLES["recommendations"].columns])


def output_column(name: str, kind: str, used: list[str], config: RecommendConfig) -> Column:
    """A `recommendations` column from the blended rows."""
    if name == "sources":
        return F.array_compact(F.array(*[
            F.when(F.col(f"in_{s}"), F.lit(s)) for s in SOURCES])).alias(name)
    if name == "reason":
        return reason(used, config).alias(name)
    return F.col(name).cast(kind).alias(name)


def why_failing(cut: float) -> Column:
    return F.when(F.col("label_success") == F.lit(False), F.lit("failed (label)")).otherwise(
        F.format_string(f"predicted to fail (p_success %.2f < {cut:.2f})", F.col("p_success")))


def trust_notes() -> list[Column]:
    return [
        F.when(F.col("cluster_trusted") == F.lit(False), F.format_string(
            "the query's cluster %d is not trusted", F.col("cluster_id"))),
        F.when(F.col("rec_cluster_trusted") == F.lit(False), F.format_string(
            "the suggestion's cluster %d is not trusted", F.col("rec_cluster_id"))),
    ]


def source_notes() -> list[Column]:
    return [
        F.when(F.col("in_reformulation"), F.format_string(
            "reformulation: %d of the query's %d failed searches were followed by it (%.0f%%)",
            F.col("reformulation_pairs"), F.col("reformulation_failed"),
            100 * F.col("reformulation_share"))),
        F.when(F.col("in_lexical"), F.concat(
            F.format_string("lexical: similarity %.2f", F.col("lexical_similarity")),
            F.when(F.col("lexical_note") != "",
                   F.concat(F.lit(" ("), F.col("lexical_note"), F.lit(")"))).otherwise(""))),
        F.when(F.col("in_semantic"), F.format_string(
            "semantic: cosine %.3f in cluster %d (success rate %.2f)", F.col("similarity"),
            F.col("rec_cluster_id"), F.col("rec_cluster_success_rate"))),
    ]


def reason(used: list[str], config: RecommendConfig) -> Column:
    """The explanation of a row: why the query is failing, what proposed the suggestion, its
    success score and blend score, and any untrusted cluster."""
    served = F.concat_ws("; ", why_failing(config.predicted_fail_below), *source_notes(),
                         F.format_string("suggestion's success score %.3f over %d searches",
                                         F.col("rec_success_rate"), F.col("rec_support")),
                         F.format_string("score %.3f", F.col("score")), *trust_notes())
    none = F.concat_ws("; ", why_failing(config.predicted_fail_below),
                       F.lit(f"no suggestion from {', '.join(used) or 'any source'}"),
                       *trust_notes())
    return F.when(F.col("rank").isNull(), none).otherwise(served)
