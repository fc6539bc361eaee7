"""Cluster labels: stop words, fragments, min_df, bigrams and distinct labels (mostly pandas)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from querylens.cluster.naming import (
    STOP_WORDS,
    drop_fragments,
    exemplars,
    label_lengths,
    name_clusters,
    ranked_terms,
    stop_words,
    term_counts,
)
from querylens.runtime.config import ConfigError, load_config


def reference_terms(query: str, stop: frozenset[str]) -> set[str]:
    """Words (letters and digits, >= 2 characters, a letter, not stop) and adjacent pairs."""
    tokens = re.findall(r"[^\W_]+", query.lower())
    words = [t if len(t) >= 2 and any(c.isalpha() for c in t) and t not in stop else None
             for t in tokens]
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:], strict=False) if a and b]
    return {w for w in words if w} | set(pairs)


def counts_of(clusters: dict[int, list[str]], stop: frozenset[str] = STOP_WORDS) -> pd.DataFrame:
    """(cluster_id, term, count) the way `term_counts` counts, computed in Python."""
    rows = [(c, term, n) for c, queries in clusters.items()
            for term, n in Counter(t for q in queries for t in reference_terms(q, stop)).items()]
    return pd.DataFrame(rows, columns=["cluster_id", "term", "count"])


RUCKSACKS = ["dog rucksack", "dog not rucksack", "rucksack without dog", "dog rucksack large",
             "dog rucks", "rucksack for a dog", "large dog rucksack"]
FISHING = ["spiderwire stealth wirel", "spiderwire stealth wireless", "spiderwire stealth wi",
           "spiderwire stealth wireless braid", "stealth wireless braid", "spiderwire braid"]
SHOES = ["running shoes", "trail running shoes", "shoes for running", "running shoes men",
         "shoes not for running", "trail shoes"]


def test_stop_words_are_sklearns_plus_configured() -> None:
    assert STOP_WORDS >= ENGLISH_STOP_WORDS and {"not", "without", "la"} <= STOP_WORDS
    assert stop_words([" Kids ", ""]) == STOP_WORDS | {"kids"}


def test_term_counts_match_python_reference(spark: SparkSession) -> None:
    clusters = {0: RUCKSACKS + ["Dog-Rucksack, 2 pack!", "n°1 dog rucksack_x"], 1: FISHING}
    rows = [(str(i), q, c) for i, (c, q) in enumerate(
        (c, q) for c, queries in clusters.items() for q in queries)]
    df = spark.createDataFrame(rows, "query_key string, query string, cluster_id int")
    stop = stop_words(["braid"])
    ours = term_counts(df, stop).toPandas().sort_values(["cluster_id", "term"])
    ref = counts_of(clusters, stop).sort_values(["cluster_id", "term"])
    assert ours.to_numpy().tolist() == ref.to_numpy().tolist()
    terms = set(ours["term"])
    assert {"dog rucksack", "stealth wireless", "pack"} <= terms
    assert not terms & {"not", "without", "for", "braid", "rucksack dog", "dog not", "2", "x"}


def test_exemplars_are_the_nearest_and_most_searched_by_pandas(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    n_rows = 300
    frame = pd.DataFrame({
        "query_key": [f"k{i:04d}" for i in rng.permutation(n_rows)],
        "cluster_id": rng.integers(0, 4, n_rows).astype("int32"),
        "distance": rng.integers(0, 20, n_rows) / 4.0,
        "n_searches": rng.integers(1, 6, n_rows).astype("int64"),
    })
    frame["query"] = "q " + frame["query_key"]
    df = spark.createDataFrame(frame, "query_key string, cluster_id int, distance double, "
                                      "n_searches long, query string").repartition(3)
    ours = exemplars(df, 5).toPandas().set_index("cluster_id").sort_index()
    near = frame.sort_values(["distance", "query_key"]).groupby("cluster_id")["query"]
    top = frame.sort_values(["n_searches", "query_key"], ascending=[False, True]).groupby(
        "cluster_id")["query"]
    assert list(ours.index) == [0, 1, 2, 3]
    for c in ours.index:
        assert list(ours.loc[c, "central_queries"]) == near.get_group(c).head(5).tolist()
        assert list(ours.loc[c, "top_queries"]) == top.get_group(c).head(5).tolist()


def test_labels_have_no_stop_words_or_fragments() -> None:
    counts = counts_of({0: RUCKSACKS, 1: FISHING, 2: SHOES})
    names = name_clusters(counts, [0, 1, 2], n_terms=10, label_terms=3, min_df=1)
    for terms in names["top_terms"]:
        words = {w for t in terms for w in t.split(" ")}
        assert words and not words & STOP_WORDS
        assert not {"wirel", "wi", "rucks"} & words
    fishing = names.set_index("cluster_id").loc[1, "top_terms"]
    assert "wireless" in " ".join(fishing) and "spiderwire" in " ".join(fishing)
    for label in names["label"]:
        assert not set(re.split(r" / | ", label)) & (STOP_WORDS | {"wirel", "wi", "rucks"})


def test_fragments_are_dropped_only_beside_a_term_at_least_as_frequent() -> None:
    counts = {"wi": 1, "wirel": 1, "wireless": 3, "wool": 5, "woolen": 2, "bag": 2, "bags": 2,
              "stealth wi": 1, "stealth wireless": 1, "women womens": 4, "red bag": 2,
              "dress": 3, "red dress": 3, "coat": 3, "wool coat": 2}
    assert drop_fragments(counts) == {"wireless": 3, "wool": 5, "woolen": 2, "bags": 2,
                                      "stealth wireless": 1, "red bag": 2, "red dress": 3,
                                      "coat": 3, "wool coat": 2}


def test_min_df_drops_terms_seen_in_too_few_queries() -> None:
    counts = counts_of({0: ["linen shirt", "linen shirt white", "shirt oversized", "shirt"],
                        1: ["tote bag", "tote"]})
    loose = ranked_terms(counts, min_df=1)
    strict = ranked_terms(counts, min_df=2)
    assert {"shirt white", "shirt oversized"} <= set(loose[0])
    assert set(strict[0]) == {"shirt", "linen shirt"}
    assert ranked_terms(counts, min_df=3)[0] == ["shirt"]
    assert ranked_terms(counts, min_df=5)[1] == ["tote"]


def test_a_bigram_can_label_a_cluster_and_its_words_do_not_repeat() -> None:
    counts = counts_of({
        0: ["ankle boots", "ankle boots black", "ankle boots suede", "ankle boots heel",
            "chelsea boots", "boots"],
        1: ["sandals", "sandals flat", "black sandals", "sandals heel"],
    })
    names = name_clusters(counts, [0, 1], n_terms=10, label_terms=3, min_df=2)
    boots = names.set_index("cluster_id").loc[0]
    assert "ankle boots" in boots["label"].split(" / ")
    assert "ankle" not in boots["top_terms"]
    words = [w for t in boots["top_terms"] for w in t.split(" ")]
    assert words.count("ankle") == 1


def test_clusters_that_would_share_a_label_get_distinct_ones() -> None:
    shared = ["womens"] * 6 + ["women"] * 2 + ["ladies"] * 6
    clusters = {0: shared + ["boots"] * 2, 1: shared + ["sandals"] * 2,
                2: ["mens jacket"] * 3 + ["jacket", "parka", "parka"]}
    ranked = ranked_terms(counts_of(clusters), min_df=2)
    assert ranked[0][:2] == ranked[1][:2]
    names = name_clusters(counts_of(clusters), [0, 1, 2], n_terms=2, label_terms=2, min_df=2)
    labels = names.set_index("cluster_id")["label"]
    assert labels.is_unique and "#" not in "".join(labels)
    assert labels[0] == "ladies / womens / boots" and labels[1] == "ladies / womens / sandals"
    assert len(labels[0].split(" / ")) == 3 and len(labels[2].split(" / ")) == 2
    for c, terms in names.set_index("cluster_id")["top_terms"].items():
        assert labels[c] == " / ".join(terms[:len(labels[c].split(" / "))])


def test_labels_grow_only_where_they_clash_and_fall_back_to_the_id() -> None:
    ranked = {0: ["a", "b", "c", "d"], 1: ["a", "b", "c", "e", "f"], 2: ["a", "b", "c"],
              3: ["x", "y"], 4: [], 5: []}
    assert label_lengths(ranked, 3) == {0: 4, 1: 4, 2: 3, 3: 2, 4: 0, 5: 0}
    same = counts_of({0: ["red dress", "red dress"], 1: ["red dress", "red dress"]})
    names = name_clusters(same, [0, 1, 7], n_terms=5, label_terms=2, min_df=1)
    assert names["label"].tolist() == ["red dress #0", "red dress #1", "(no terms)"]
    assert names["cluster_id"].tolist() == [0, 1, 7]


def test_config_keys_are_checked() -> None:
    cluster = load_config(None, ['cluster.stop_words=["kids"]', "cluster.label_min_df=3"]).cluster
    assert cluster.stop_words == ["kids"] and cluster.label_min_df == 3
    assert load_config(None, []).cluster.label_min_df == 2
    with pytest.raises(ConfigError, match="cluster.label_min_df"):
        load_config(None, ["cluster.label_min_df=0"])
