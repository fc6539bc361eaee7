"""The recommend stage: reformulations mined from sessions, candidates from three sources
(reformulation, lexical, semantic), the blend (or the seed's nearest-cluster rule), IVF recall
and the held-out and demo evaluations."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from querylens.embed.stage import run_embeddings
from querylens.ingest.normalize import query_key
from querylens.recommend import evaluate as holdout
from querylens.recommend.blend import Weights, blend
from querylens.recommend.index import RecommendIndex, build_index, recall_at_n, recommend_df
from querylens.recommend.lexical import build_lexical_index, lexical_df
from querylens.recommend.reformulations import (
    held_out,
    mine_reformulations,
    next_searches,
    session_searches,
)
from querylens.runtime.arrays import normalize_rows, stack_rows, to_pandas
from querylens.runtime.config import RecommendConfig
from querylens.runtime.errors import InputError
from querylens.runtime.runs import Run
from querylens.runtime.specs import TABLES
from querylens.runtime.stages import Stage, without_interactions
from querylens.runtime.tables import table_exists
from querylens.runtime.workers import Shared
from querylens.success import evaluate

log = logging.getLogger("querylens")

Row = tuple[str, str, str, float]
SEED_RULE = "recommend_nearest_cluster"


@dataclass
class Sources:
    """Per-query candidates of the semantic and lexical sources (cached), and the shared
    objects to destroy once the stage's last action has run."""

    semantic: DataFrame
    lexical: DataFrame
    shared: list[Shared[Any]] = field(default_factory=list)

    def release(self) -> None:
        for df in (self.semantic, self.lexical):
            df.unpersist()
        for handle in self.shared:
            handle.destroy()


def recommend_stage(run: Run) -> None:
    """Labels, predictions, embeddings, sessions -> `reformulations`, `recommendations`."""
    cfg = run.config.recommend
    embeddings = run_embeddings(run)
    facts: dict[str, Any] = {"notes": [], "strategy": cfg.strategy}
    run.facts["recommend"] = facts
    frame = query_frame(run, facts).cache()
    predicted_fail = F.col("success").isNull() & F.coalesce(
        F.col("p_success") < cfg.predicted_fail_below, F.lit(False))
    failing = frame.where((F.col("success") == F.lit(False)) | predicted_fail)
    min_support = max(cfg.min_support, run.config.success.min_support)
    recommendable = frame.where(
        (F.col("success") == F.lit(True)) & (F.col("support") >= min_support))
    candidates = candidate_frame(run, recommendable)
    index = build_index(centroids(embeddings, frame), cluster_rates(run),
                        to_pandas(recommendable.join(embeddings, "query_key")), cfg)
    facts.update({"successful_clusters": sorted(index.clusters),
                  "candidates": candidates.count(),
                  "ivf_clusters": sorted(k for k, c in index.clusters.items() if c.ivf)})
    if not index.clusters:
        facts["notes"].append(
            f"no successful cluster: none has success rate >= {cfg.min_cluster_success_rate} "
            f"and a labelled successful query with support >= {min_support}; the semantic "
            "source is empty")
    if not facts["candidates"]:
        facts["notes"].append("no recommendable query (a labelled success with support >= "
                              f"{min_support}): recommendations are empty")
        log.warning("recommend: %s", facts["notes"][-1])
        run.write("recommendations", run.spark.createDataFrame([], TABLES["recommendations"].ddl()))
        run.write_metrics([("recommendations", "all", "failing_queries",
                            float(failing.count()))])
        frame.unpersist()
        return
    searches = read_searches(run, facts)
    rows: list[Row] = []
    cases = None
    train_pairs = all_pairs = None
    if searches is not None:
        seconds = run.config.input.reformulation_seconds
        labels = frame.select("query_key", "success", "smoothed_score")
        all_pairs = mine_reformulations(searches, seconds, labels)
        run.write("reformulations", all_pairs.select(*TABLES["reformulations"].names))
        if cfg.holdout_share > 0:
            held = held_out(F.col("session_id"), cfg.holdout_share, cfg.seed)
            train_pairs = mine_reformulations(searches.where(~held), seconds, labels)
            cases = holdout.evaluation_cases(
                next_searches(searches.where(held), seconds), candidates).cache()
    targets = failing if cases is None else failing.unionByName(
        frame.join(cases.select("query_key").distinct(), "query_key")).dropDuplicates(
            ["query_key"])
    sources = candidate_sources(targets, candidates, embeddings, index, cfg)
    main = {"semantic": sources.semantic}
    if cfg.strategy == "blend":
        main["lexical"] = sources.lexical
        if all_pairs is not None:
            main["reformulation"] = pair_source(run.read("reformulations"), cfg)
    recs = ranked(failing, candidates, main, cfg, cfg.strategy)
    run.write("recommendations", recs)
    written = run.read("recommendations")
    rows += summary_rows(written)
    rows += recall_rows(failing.join(embeddings, "query_key"), index, cfg, facts)
    truth = evaluate.ground_truth(run.spark, run.database)
    if truth is None:
        facts["notes"].append(f"no {evaluate.GROUND_TRUTH_TABLE} table: evaluation skipped")
    else:
        new_rows, notes = evaluate.evaluate_recommendations(written, truth)
        rows += new_rows
        facts["notes"] += notes
    if cases is not None and train_pairs is not None:
        rows += holdout_rows(run, frame, cases, candidates, sources,
                             pair_source(train_pairs, cfg).cache(), cfg)
        cases.unpersist()
    elif searches is not None:
        facts["notes"].append("recommend.holdout_share is 0: held-out evaluation skipped")
    sources.release()
    frame.unpersist()
    run.write_metrics(rows)


def query_frame(run: Run, facts: dict[str, Any]) -> DataFrame:
    """Per labelled query: text, cluster, label, smoothed score, support, p_success and whether
    its cluster is trusted (null without a `clusters` trust flag)."""
    labels = run.read("success_labels")
    queries = run.read("queries").select("query_key", "query")
    if run.has_rows("success_predictions"):
        preds = run.read("success_predictions").select("query_key", "p_success")
    else:
        preds = labels.select("query_key", F.lit(None).cast("double").alias("p_success"))
        facts["notes"].append("no success_predictions this run: failing means labelled failure")
    frame = labels.select("query_key", "cluster_id", "success", "smoothed_score", "support").join(
        preds, "query_key", "left").join(queries, "query_key")
    return frame.join(cluster_trust(run), "cluster_id", "left")


def cluster_trust(run: Run) -> DataFrame:
    """cluster_id, cluster_trusted from this run's `clusters` (empty when absent)."""
    if run.has_rows("clusters"):
        return run.read("clusters").select("cluster_id",
                                           F.col("trusted").alias("cluster_trusted"))
    return run.spark.createDataFrame([], "cluster_id int, cluster_trusted boolean")


def cluster_rates(run: Run) -> dict[int, float]:
    return {int(r["cluster_id"]): float(r["success_rate"])
            for r in run.read("cluster_success").collect() if r["success_rate"] is not None}


def candidate_frame(run: Run, recommendable: DataFrame) -> DataFrame:
    """The recommendable queries in the blend's `CANDIDATE_COLUMNS` (cached)."""
    rates = run.read("cluster_success").select(
        "cluster_id", F.col("success_rate").alias("rec_cluster_success_rate"))
    return recommendable.join(rates, "cluster_id", "left").select(
        F.col("query_key").alias("rec_query_key"), F.col("query").alias("rec_query"),
        F.col("cluster_id").alias("rec_cluster_id"),
        F.col("cluster_trusted").alias("rec_cluster_trusted"), "rec_cluster_success_rate",
        F.col("smoothed_score").alias("rec_success_rate"),
        F.col("support").alias("rec_support")).cache()


def candidate_sources(targets: DataFrame, candidates: DataFrame, embeddings: DataFrame,
                      index: RecommendIndex, cfg: RecommendConfig) -> Sources:
    """Semantic (nearest successful cluster, top `candidates_per_source`) and lexical candidates
    of every target, computed once and cached."""
    wide = dataclasses.replace(cfg, n_recommendations=cfg.candidates_per_source)
    shared: list[Shared[Any]] = []
    if index.clusters:
        semantic_rows, index_handle = recommend_df(targets.join(embeddings, "query_key"), index,
                                                   wide)
        shared.append(index_handle)
        semantic = semantic_rows.where(F.col("rank").isNotNull()).select(
            "query_key", "rec_query_key", "similarity", "cluster_distance", "search")
    else:
        semantic = targets.sparkSession.createDataFrame(
            [], "query_key string, rec_query_key string, similarity double, "
                "cluster_distance double, search string")
    pool = to_pandas(candidates.select("rec_query_key", "rec_query"))
    lexical_index = build_lexical_index(pool["rec_query_key"], pool["rec_query"])
    assert lexical_index is not None
    lexical, handle = lexical_df(targets, lexical_index, cfg.candidates_per_source,
                                 cfg.min_lexical_similarity)
    shared.append(handle)
    semantic, lexical = semantic.cache(), lexical.cache()
    semantic.count()
    lexical.count()
    return Sources(semantic, lexical, shared)


def pair_source(pairs: DataFrame, cfg: RecommendConfig) -> DataFrame:
    """Mined pairs with at least `min_reformulation_pairs` as the reformulation source."""
    return pairs.where(F.col("pairs") >= cfg.min_reformulation_pairs).select(
        "query_key", F.col("next_query_key").alias("rec_query_key"),
        F.col("pairs").alias("reformulation_pairs"),
        F.col("failed_searches").alias("reformulation_failed"),
        F.col("share").alias("reformulation_share"))


def ranked(targets: DataFrame, candidates: DataFrame, sources: dict[str, DataFrame],
           cfg: RecommendConfig, strategy: str) -> DataFrame:
    """`blend` of `sources` for `targets` by `strategy`: `blend` (configured weights, diverse),
    `nearest_cluster` (the seed's rule: semantic cosine only) or a single source's name."""
    columns = targets.select(
        "query_key", "query", "cluster_id", "cluster_trusted",
        F.col("success").alias("label_success"), "p_success")
    if strategy == "blend":
        return blend(columns, candidates, sources, Weights.of(cfg), cfg)
    source = "semantic" if strategy == "nearest_cluster" else strategy
    return blend(columns, candidates, {source: sources[source]}, Weights.only(source), cfg,
                 diverse=False)


def holdout_rows(run: Run, frame: DataFrame, cases: DataFrame, candidates: DataFrame,
                 sources: Sources, train_pairs: DataFrame, cfg: RecommendConfig) -> list[Row]:
    """hit@1/hit@5/MRR (and the demo truth metrics) of the blend, the seed rule and each
    source alone, for suggestions built without the held-out sessions."""
    targets = frame.join(cases.select("query_key").distinct(), "query_key").cache()
    pool = {"semantic": sources.semantic, "lexical": sources.lexical,
            "reformulation": train_pairs}
    truth = demo_truth(run)
    if truth is not None:
        truth = truth.cache()
    rows: list[Row] = []
    for strategy in ("blend", "nearest_cluster", "reformulation", "lexical"):
        model = f"recommend_{strategy}"
        suggestions = ranked(targets, candidates, pool, cfg, strategy).cache()
        rows += holdout.ranking_metrics(cases, suggestions, model)
        if truth is not None:
            rows += holdout.truth_metrics(suggestions, targets, truth, model)
        suggestions.unpersist()
    for df in (targets, train_pairs, truth):
        if df is not None:
            df.unpersist()
    return rows


def demo_truth(run: Run) -> DataFrame | None:
    """The demo ground truth per query (see `evaluate.truth_table`), None on real logs."""
    if not table_exists(run.spark, run.database, evaluate.GROUND_TRUTH_TABLE):
        return None
    raw = run.spark.table(f"{run.database}.{evaluate.GROUND_TRUTH_TABLE}")
    key = query_key(F.col("intended_query")) if "intended_query" in raw.columns else None
    return holdout.truth_table(raw, key)


def read_searches(run: Run, facts: dict[str, Any]) -> DataFrame | None:
    """The input's searches with sessions and timestamps (cached), None with a note when the
    input cannot be read or has none."""
    try:
        searches = session_searches(run.spark, run.config).cache()
    except InputError as exc:
        facts["notes"].append(f"reformulations skipped: the input cannot be read again ({exc})")
        return None
    counted = searches.agg(F.count("*").alias("searches"),
                           F.countDistinct("session_id").alias("sessions")).first()
    assert counted is not None
    facts["session_searches"] = int(counted["searches"])
    facts["sessions"] = int(counted["sessions"])
    if not counted["searches"]:
        facts["notes"].append("no search with a session id and timestamp: reformulations and "
                              "the held-out evaluation skipped")
        searches.unpersist()
        return None
    return searches


def summary_rows(written: DataFrame) -> list[Row]:
    """Counts of the written recommendations, overall and per source."""
    served = F.col("rec_query_key").isNotNull()
    got = written.agg(
        F.countDistinct("query_key").alias("failing"), F.count("rec_query_key").alias("recs"),
        F.countDistinct(F.when(served, F.col("query_key"))).alias("served"),
        *[F.sum(F.array_contains("sources", s).cast("long")).alias(s)
          for s in ("reformulation", "lexical", "semantic")]).first()
    assert got is not None
    return [("recommendations", "all", "failing_queries", float(got["failing"])),
            ("recommendations", "all", "recommendations", float(got["recs"])),
            ("recommendations", "all", "queries_with_recommendations", float(got["served"])),
            *[("recommendations", "all", f"from_{s}", float(got[s] or 0))
              for s in ("reformulation", "lexical", "semantic")]]


def centroids(embeddings: DataFrame, labels: DataFrame) -> pd.DataFrame:
    """Mean embedding of each cluster (Spark's Summarizer), as cluster_id, centroid."""
    joined = embeddings.join(labels.select("query_key", "cluster_id"), "query_key").where(
        F.col("cluster_id").isNotNull())
    means = joined.groupBy("cluster_id").agg(
        Summarizer.mean(array_to_vector(F.col("embedding"))).alias("mean"))
    return to_pandas(means.select(
        "cluster_id", vector_to_array(F.col("mean"), "float32").alias("centroid")))


def recall_rows(failing: DataFrame, index: RecommendIndex, cfg: RecommendConfig,
                facts: dict[str, Any]) -> list[Row]:
    """IVF recall@n against exact search on a sample of failing queries (driver-side)."""
    n = cfg.n_recommendations
    if not any(c.ivf is not None for c in index.clusters.values()):
        facts["notes"].append("every successful cluster is searched exactly (recall 1)")
        return []
    picked = to_pandas(failing.select("cluster_id", "embedding").orderBy(
        F.xxhash64("query_key", F.lit(cfg.seed))).limit(cfg.recall_sample))
    own = picked["cluster_id"].fillna(-1).to_numpy(dtype=np.int64)
    recall, counted = recall_at_n(normalize_rows(stack_rows(picked["embedding"])), own, index, n)
    if recall is None:
        facts["notes"].append("no sampled failing query targets an IVF-searched cluster")
        return []
    return [("recommend_ivf", "sample", f"recall_at_{n}", recall),
            ("recommend_ivf", "sample", "queries", float(counted))]


RECOMMEND = Stage("recommend", recommend_stage,
                  reads=("queries", "success_labels", "cluster_success", "query_embeddings"),
                  writes=("reformulations", "recommendations", "model_metrics"),
                  uses=("success_predictions", "clusters", "demo_ground_truth"),
                  skip=without_interactions)
