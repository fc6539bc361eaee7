"""Readable clusters: class-based TF-IDF terms, a short label, exemplars, next cluster."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

STOP_WORDS: frozenset[str] = frozenset(ENGLISH_STOP_WORDS | {"la"})
TOKEN_SPLIT = r"[^\p{L}\p{N}]+"
NO_TERMS = "(no terms)"


def stop_words(extra: Iterable[str] = ()) -> frozenset[str]:
    """scikit-learn's English stop words (plus "la") and `extra`, lower-cased."""
    return STOP_WORDS | {w.strip().lower() for w in extra if w.strip()}


def is_word(token: Column, stop: Collection[str]) -> Column:
    """A token that can be a term: two characters or more, a letter, not a stop word."""
    return (F.length(token) >= 2) & token.rlike(r"\p{L}") & ~token.isin(sorted(stop))


def term_counts(assigned: DataFrame, stop: Collection[str] = STOP_WORDS) -> DataFrame:
    """(cluster_id, term, count): how many of each cluster's queries contain each term.

    Terms are the query's words that are not stop words and the bigrams of two such words
    next to each other in the query ("dog not rucksack" has no bigram).
    """
    words = F.transform(F.split(F.lower("query"), TOKEN_SPLIT),
                        lambda w: F.when(is_word(w, stop), w))
    bigrams = F.transform(words, lambda w, i: F.concat(
        w, F.lit(" "), F.try_element_at(words, i + 2)))
    terms = F.filter(F.array_distinct(F.concat(words, bigrams)), lambda t: t.isNotNull())
    tokens = assigned.select("cluster_id", F.explode(terms).alias("term"))
    return tokens.groupBy("cluster_id", "term").agg(F.count("*").alias("count"))


def ctfidf_scores(counts: pd.DataFrame) -> pd.DataFrame:
    """`counts` (cluster_id, term, count) with `score`, the class-based TF-IDF (BERTopic's).

    tf is each cluster's term frequency normalised to sum 1; idf = log(1 + A / f_t) with A the
    mean number of terms per cluster and f_t the term's count over all clusters.
    """
    counts = counts.groupby(["cluster_id", "term"], as_index=False)["count"].sum()
    n = counts["count"].astype(np.float64)
    per_cluster = n.groupby(counts["cluster_id"]).transform("sum")
    per_term = n.groupby(counts["term"]).transform("sum")
    mean_terms = n.sum() / counts["cluster_id"].nunique()
    return counts.assign(score=n / per_cluster * np.log(1.0 + mean_terms / per_term))


def drop_fragments(counts: dict[str, int]) -> dict[str, int]:
    """Drop each term that a longer term at least as frequent starts with ("wirel" beside
    "wireless", "stealth wi" beside "stealth wireless", "women" beside "womens") or, for a
    word, ends with ("dress" beside "red dress"), and each bigram of a word and its own
    prefix ("women womens")."""
    ordered = sorted(counts)
    longer = dict.fromkeys(ordered, 0)
    for i, term in enumerate(ordered):
        j = i + 1
        while j < len(ordered) and ordered[j].startswith(term):
            longer[term] = max(longer[term], counts[ordered[j]])
            j += 1
        last = term.partition(" ")[2]
        if last in longer:
            longer[last] = max(longer[last], counts[term])
    return {t: n for t, n in counts.items() if longer[t] < n and not repeats_itself(t)}


def repeats_itself(term: str) -> bool:
    """A bigram one of whose words begins the other ("women womens", "wirel wireless")."""
    first, _, second = term.partition(" ")
    return bool(second) and (first.startswith(second) or second.startswith(first))


def cover(terms: list[str]) -> list[str]:
    """Keep the terms, in order, that add a word the terms before them do not have."""
    seen: set[str] = set()
    kept = []
    for term in terms:
        words = set(term.split(" "))
        if not words <= seen:
            kept.append(term)
            seen |= words
    return kept


def ranked_terms(counts: pd.DataFrame, min_df: int = 1) -> dict[int, list[str]]:
    """Each cluster's label candidates, most distinctive (c-TF-IDF) first.

    A candidate occurs in at least `min_df` of the cluster's queries (or, where no term does,
    as many as its most frequent term), is no fragment (`drop_fragments`) and adds a word to
    the candidates ranked above it (`cover`).
    """
    if counts.empty:
        return {}
    ranked: dict[int, list[str]] = {}
    for cid, group in ctfidf_scores(counts).groupby("cluster_id"):
        group = group[group["count"] >= min(min_df, int(group["count"].max()))]
        kept = drop_fragments(dict(zip(group["term"].astype(str), group["count"].astype(int),
                                       strict=True)))
        group = group[group["term"].isin(kept)].sort_values(["score", "term"],
                                                            ascending=[False, True])
        ranked[int(cid)] = cover(group["term"].tolist())
    return ranked


def label_of(terms: list[str], n: int) -> str:
    """The first `n` terms joined with " / "."""
    return " / ".join(terms[:n]) if terms else NO_TERMS


def label_lengths(ranked: dict[int, list[str]], n: int) -> dict[int, int]:
    """Terms per label: `n`, plus one more for every cluster still sharing its label."""
    length = {c: min(n, len(t)) for c, t in ranked.items()}
    while True:
        groups: defaultdict[tuple[str, ...], list[int]] = defaultdict(list)
        for c, terms in ranked.items():
            groups[tuple(terms[:length[c]])].append(c)
        grow = [c for same in groups.values() if len(same) > 1 for c in same
                if length[c] < len(ranked[c])]
        if not grow:
            return length
        for c in grow:
            length[c] += 1


def suffix_duplicates(labels: dict[int, str]) -> dict[int, str]:
    """Labels that two clusters still share, suffixed with the cluster id."""
    seen = Counter(labels.values())
    return {c: f"{label} #{c}" if seen[label] > 1 else label for c, label in labels.items()}


def name_clusters(
    counts: pd.DataFrame, cluster_ids: Iterable[int], n_terms: int, label_terms: int,
    min_df: int = 1,
) -> pd.DataFrame:
    """(cluster_id, top_terms, label) for each id: ranked terms and a label no other shares.

    The label joins the first `label_terms` candidates with " / ", and one more for every
    cluster whose label another cluster shares, until they differ (else the id is appended).
    top_terms are the first `n_terms` candidates, or as many as the label uses.
    """
    found = ranked_terms(counts, min_df)
    ranked = {int(c): found.get(int(c), []) for c in cluster_ids}
    length = label_lengths(ranked, label_terms)
    labels = suffix_duplicates({c: label_of(t, length[c]) for c, t in ranked.items()})
    return pd.DataFrame({
        "cluster_id": pd.Series(list(ranked), dtype="int32"),
        "top_terms": [t[:max(n_terms, length[c])] for c, t in ranked.items()],
        "label": [labels[c] for c in ranked],
    })


def exemplars(assigned: DataFrame, n: int) -> DataFrame:
    """Per cluster: `n` queries nearest the centroid and `n` most searched (ties by key)."""
    near = first_queries(assigned, [F.col("distance"), F.col("query_key")], n, "central_queries")
    top = first_queries(assigned, [F.desc("n_searches"), F.col("query_key")], n, "top_queries")
    return near.join(top, "cluster_id", "full")


def first_queries(assigned: DataFrame, order: list[Column], n: int, name: str) -> DataFrame:
    """(cluster_id, `name`): each cluster's first `n` queries under `order`. A row number
    filtered by a constant lets Spark keep only the top `n` per partition before the shuffle
    (`WindowGroupLimit`)."""
    rank = F.row_number().over(Window.partitionBy("cluster_id").orderBy(*order))
    picked = assigned.select("cluster_id", "query", rank.alias("r")).where(F.col("r") <= n)
    ordered = F.array_sort(F.collect_list(F.struct("r", "query")))
    return picked.groupBy("cluster_id").agg(F.transform(ordered, lambda s: s["query"]).alias(name))


def next_clusters(centroids: np.ndarray) -> np.ndarray:
    """Nearest other centroid of each centroid."""
    d = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return d.argmin(1)
