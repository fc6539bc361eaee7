"""Readable clusters: class-based TF-IDF terms, a short label, exemplars, next cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

STOP_WORDS = ["a", "an", "and", "for", "in", "of", "on", "or", "the", "to", "with", "de", "la"]
TOKEN_SPLIT = r"[^\p{L}\p{N}]+"


def term_counts(assigned: DataFrame) -> DataFrame:
    """(cluster_id, term, count): how many of each cluster's queries contain each term."""
    tokens = assigned.select(
        "cluster_id", "query_key",
        F.explode(F.array_distinct(F.split(F.lower("query"), TOKEN_SPLIT))).alias("term"),
    )
    tokens = tokens.where((F.length("term") >= 2) & F.col("term").rlike(r"\p{L}")
                          & ~F.col("term").isin(STOP_WORDS))
    return tokens.groupBy("cluster_id", "term").agg(F.count("*").alias("count"))


def ctfidf(counts: pd.DataFrame, n_terms: int) -> pd.DataFrame:
    """Top `n_terms` terms per cluster by class-based TF-IDF (BERTopic's formula).

    tf is each cluster's term frequency normalised to sum 1; idf = log(1 + A / f_t) with A the
    mean number of terms per cluster and f_t the term's count over all clusters.
    """
    if counts.empty:
        return pd.DataFrame({"cluster_id": pd.Series(dtype="int32"), "top_terms": []})
    table = counts.pivot_table(index="cluster_id", columns="term", values="count",
                               aggfunc="sum", fill_value=0).astype(np.float64)
    X = table.to_numpy()
    tf = X / X.sum(1, keepdims=True)
    idf = np.log(1.0 + X.sum(1).mean() / X.sum(0))
    scores = tf * idf
    terms = table.columns.to_numpy()
    top = []
    for row in scores:
        order = np.lexsort((terms, -row))
        top.append([str(terms[i]) for i in order if row[i] > 0][:n_terms])
    return pd.DataFrame({"cluster_id": table.index.astype("int32"), "top_terms": top})


def label_of(terms: list[str], n: int) -> str:
    return " / ".join(terms[:n]) if terms else "(no terms)"


def exemplars(assigned: DataFrame, n: int) -> DataFrame:
    """Per cluster: `n` queries nearest the centroid and `n` most searched."""
    near = Window.partitionBy("cluster_id").orderBy("distance", "query_key")
    top = Window.partitionBy("cluster_id").orderBy(F.desc("n_searches"), "query_key")
    ranked = assigned.select(
        "cluster_id", "query", "distance", "n_searches",
        F.row_number().over(near).alias("near_rank"),
        F.row_number().over(top).alias("top_rank"),
    ).where((F.col("near_rank") <= n) | (F.col("top_rank") <= n))

    def ordered(rank: str, key: str) -> F.Column:
        picked = F.filter(F.collect_list(F.struct(F.col(rank).alias("r"), "query")),
                          lambda s: s["r"] <= n)
        return F.transform(F.array_sort(picked), lambda s: s["query"]).alias(key)

    return ranked.groupBy("cluster_id").agg(ordered("near_rank", "central_queries"),
                                            ordered("top_rank", "top_queries"))


def next_clusters(centroids: np.ndarray) -> np.ndarray:
    """Nearest other centroid of each centroid."""
    d = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return d.argmin(1)
