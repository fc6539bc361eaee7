from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from scipy import sparse

from querylens.recommend.blend import Weights, blend
from querylens.recommend.evaluate import evaluation_cases, ranking_metrics
from querylens.recommend.lexical import (
    LexicalIndex,
    build_lexical_index,
    coverage,
    lexical_batch,
    nearest,
    token_similarity,
    tokenize,
    top_entries,
    unknown_words,
)
from querylens.recommend.reformulations import (
    held_out,
    mine_reformulations,
    next_searches,
    searches_of,
)
from querylens.runtime.config import load_config

T0 = datetime(2026, 1, 1, 12, 0, 0)
EVENTS = "session_id string, ts timestamp, query_key string, searches long, clicks long, " \
         "add_to_bags long, purchases long"


def event(session: str | None, seconds: float, key: str, clicks: int = 0) -> tuple:
    return (session, T0 + timedelta(seconds=seconds), key, 1, clicks, 0, 0)


SESSIONS = [
    event("s1", 0, "a"), event("s1", 30, "b"), event("s1", 100, "c"),
    event("s2", 0, "a"), event("s2", 60, "b", clicks=1),
    event("s3", 0, "a"), event("s3", 61, "b"),
    event("s4", 0, "a"),
    event("s5", 0, "a", clicks=2), event("s5", 10, "b"),
    event("s6", 0, "a"), event("s6", 5, "a"), event("s6", 10, "b"),
    event("s7", 0, "b"), event("s7", 20, "c", clicks=1),
    event(None, 0, "a"), event(None, 5, "b"),
]


def test_reformulation_pairs_equal_a_hand_count(spark: SparkSession) -> None:
    searches = searches_of(spark.createDataFrame(SESSIONS, EVENTS))
    got = {(r["query_key"], r["next_query_key"]): r.asDict()
           for r in mine_reformulations(searches, 60.0).collect()}
    # a -> b: s1 (30 s), s2 (60 s, the window's edge), s6 (the second a); not s3 (61 s),
    # s4 (one search), s5 (a clicked), the repeat a -> a, nor the searches without a session.
    # a failed in s1, s2, s3, s4 and twice in s6: 6. b -> c: s7 only (s1's c is 70 s later);
    # b failed in s1, s3, s5, s6, s7: 5.
    assert set(got) == {("a", "b"), ("b", "c")}
    assert (got["a", "b"]["pairs"], got["a", "b"]["sessions"],
            got["a", "b"]["failed_searches"]) == (3, 3, 6)
    assert got["a", "b"]["share"] == pytest.approx(3 / 6)
    assert (got["b", "c"]["pairs"], got["b", "c"]["failed_searches"]) == (1, 5)
    wider = {(r["query_key"], r["next_query_key"]): r["pairs"]
             for r in mine_reformulations(searches, 70.0).collect()}
    assert wider == {("a", "b"): 4, ("b", "c"): 2}


def test_reformulations_carry_the_next_query_success(spark: SparkSession) -> None:
    searches = searches_of(spark.createDataFrame(SESSIONS, EVENTS))
    labels = spark.createDataFrame([("b", True, 0.7), ("c", False, 0.1)],
                                   "query_key string, success boolean, smoothed_score double")
    got = {r["next_query_key"]: (r["next_success"], r["next_success_score"])
           for r in mine_reformulations(searches, 60.0, labels).collect()}
    assert got == {"b": (True, 0.7), "c": (False, 0.1)}


def test_token_similarity_against_hand_counted_edit_distances() -> None:
    assert token_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert token_similarity("gabanna", "gabbana") == pytest.approx(1 - 2 / 7)
    assert token_similarity("", "abc") == 0.0 and token_similarity("same", "same") == 1.0


def test_coverage_against_a_hand_computation() -> None:
    a, b = tokenize(["hugo bos bag", "newbalance"]), tokenize(["hugo boss", "new balance"])
    score, best, match = coverage(a, np.array([0, 1]), b, np.array([0, 1]))
    # bos -> boss: 1 edit of 4; bag -> hugo or boss: 3 edits of 4; newbalance = glued pair
    assert score == pytest.approx([(1 + 0.75 + 0.25) / 3, 1.0])
    assert best[0].tolist() == pytest.approx([1.0, 0.75, 0.25])
    assert [b.names[m] for m in match[0][:2]] == ["hugo", "boss"]
    assert b.names[match[1][0]] == "new balance"


def random_ties(rng: np.random.Generator, n: int, d: int) -> sparse.csr_matrix:
    sims = sparse.random(n, d, density=float(rng.uniform(0, 0.9)), dtype=np.float32,
                         format="csr", random_state=int(rng.integers(1 << 30)))
    sims.data = np.round(sims.data, 1) + np.float32(0.1)  # many ties
    return sims


def test_top_entries_against_a_per_row_sort() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n, d, m = int(rng.integers(1, 20)), int(rng.integers(1, 30)), int(rng.integers(1, 8))
        sims = random_ties(rng, n, d)
        dense = sims.toarray()
        expected = [(i, j, float(dense[i, j])) for i in range(n) for _, j in sorted(
            (-dense[i, j], j) for j in range(d) if dense[i, j] > 0)[:m]]
        rows, cols, values = top_entries(sims, m)
        assert list(zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True)) == expected


def test_nearest_keeps_each_rows_m_largest_products() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        n, c, g, m = (int(rng.integers(1, 20)), int(rng.integers(1, 40)), int(rng.integers(1, 9)),
                      int(rng.integers(1, 8)))
        texts, grams = random_ties(rng, n, g), random_ties(rng, g, c)
        dense = (texts.toarray().astype(np.float64) @ grams.toarray()).round(5)
        rows, cols, values = nearest(texts, grams, m)
        assert values.round(5).tolist() == pytest.approx(dense[rows, cols].tolist())
        assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == len(rows)
        for i in range(n):
            top = sorted(dense[i][dense[i] > 0], reverse=True)[:m]
            assert sorted(values[rows == i].round(5), reverse=True) == pytest.approx(top)


def index_of(pool: list[str]) -> LexicalIndex:
    """The lexical index of `pool`, keyed k0, k1, ... in pool order."""
    index = build_lexical_index(pd.Series([f"k{i}" for i in range(len(pool))]), pd.Series(pool))
    assert index is not None
    return index


PLANTED = {
    "dolce gabanna": "dolce & gabbana dress",
    "addidas trainers": "adidas trainers",
    "micheal kors bags": "michael kors bags",
    "newbalance": "new balance trainers",
    "balenciga": "balenciaga sneakers",
}
OTHERS = ["balmain", "under armour jewellery", "g-star raw blue trainers", "prada gold top",
          "burberry trench", "gucci belt", "nike running shoes", "dolce vita sandals"]


def test_lexical_candidates_find_planted_misspellings() -> None:
    pool = list(PLANTED.values()) + OTHERS
    index = index_of(pool)
    batch = pd.DataFrame({"query_key": [f"m{i}" for i in range(len(PLANTED))],
                          "query": list(PLANTED)})
    got = lexical_batch(batch, index, k=5, floor=0.5)
    best = got.sort_values("lexical_similarity", ascending=False).groupby(
        "query_key", sort=False).first()
    found = {q: pool[int(best.loc[k, "rec_query_key"][1:])]
             for k, q in zip(batch["query_key"], batch["query"], strict=True) if k in best.index}
    assert found == PLANTED
    notes = dict(zip(best.index, best["lexical_note"], strict=True))
    assert "gabanna~gabbana" in notes["m0"] and "newbalance~new balance" in notes["m3"]


SNEAKERS = [f"{brand} sneakers" for brand in ("nike", "puma", "adidas", "vans", "asics", "veja")]
CORRECTION_POOL = ["gucci belt", "nike belt", "ray-ban aviator", *SNEAKERS, *[
    f"{brand} {item}" for brand in ("levis", "zara", "mango", "boss", "lee")
    for item in ("jeans", "coat", "hat", "scarf", "shirt")]]


def lexical_of(queries: list[str], pool: list[str], k: int, floor: float) -> dict[str, list]:
    batch = pd.DataFrame({"query_key": [f"m{i}" for i in range(len(queries))], "query": queries})
    got = lexical_batch(batch, index_of(pool), k=k, floor=floor)
    return {queries[int(key[1:])]: [(pool[int(r[1:])], round(s, 4), n) for r, s, n in zip(
        rows["rec_query_key"], rows["lexical_similarity"], rows["lexical_note"], strict=True)]
            for key, rows in got.groupby("query_key")}


def test_unknown_words_are_long_words_no_candidate_holds() -> None:
    pool = index_of(["gucci belt", "nike sneakers"])
    mine = tokenize(["guci sneakers", "nike tan belts"])
    unknown = unknown_words(mine, pool)
    flagged = {str(w) for w, u in zip(mine.names, unknown[:-1], strict=True) if u}
    assert flagged == {"guci", "belts"} and not unknown[-1]


def test_a_corrected_brand_is_found_beside_another_category_word() -> None:
    # the six "<brand> sneakers" are nearer by cosine to "guci sneakers" than "gucci belt" and
    # fill its 3k+1 = 4 nearest, so "gucci belt" comes only through the correction guci -> gucci
    # (1 edit of 5): its coverage (0.8 + 1 - 7/8) / 2 = 0.4625 is under the floor, the
    # correction scores 0.8, above any "<brand> sneakers" (nike's backward (0.375 + 1) / 2 at best)
    got = lexical_of(["guci sneakers", "raybans wallet", "nike belts"], CORRECTION_POOL, k=1,
                     floor=0.6)
    assert got["guci sneakers"] == [("gucci belt", 0.8, "guci~gucci")]
    assert got["raybans wallet"] == [
        ("ray-ban aviator", pytest.approx(1 - 1 / 7, abs=1e-4), "raybans~ray ban")]
    # a candidate covering the whole query better still comes first: (1 + 0.8) / 2 vs 0.8
    assert got["nike belts"] == [("nike belt", 0.9, "belts~belt")]


def test_a_query_s_lexical_candidates_do_not_depend_on_its_batch() -> None:
    index = index_of(CORRECTION_POOL + list(PLANTED.values()) + OTHERS)
    queries = ["guci sneakers", "raybans wallet", "nike belts", *PLANTED, "levis jeans"]
    batch = pd.DataFrame({"query_key": [f"m{i}" for i in range(len(queries))], "query": queries})
    whole = lexical_batch(batch, index, k=3, floor=0.5)
    one_by_one = pd.concat([lexical_batch(batch.iloc[i:i + 1], index, k=3, floor=0.5)
                            for i in range(len(batch))], ignore_index=True)
    assert len(whole) > len(queries)
    pd.testing.assert_frame_equal(whole.reset_index(drop=True), one_by_one)


def blend_inputs(spark: SparkSession) -> tuple:
    targets = spark.createDataFrame([
        ("q1", "levis jeans", 0, False, False, 0.2),
        ("q2", "lonely query", 1, True, False, 0.1),
    ], "query_key string, query string, cluster_id int, cluster_trusted boolean, "
       "label_success boolean, p_success double")
    candidates = spark.createDataFrame([
        ("c1", "levis 501 slim jeans 32", 2, True, 0.8, 0.6, 40),
        ("c2", "levis 501 slim jeans 34", 2, True, 0.8, 0.5, 30),
        ("c3", "wrangler jeans", 3, False, 0.6, 0.7, 50),
        ("c4", "levis jeans 30", 2, True, 0.8, 0.9, 50),
        ("q1", "levis jeans", 0, False, 0.3, 0.9, 50),
    ], "rec_query_key string, rec_query string, rec_cluster_id int, rec_cluster_trusted boolean, "
       "rec_cluster_success_rate double, rec_success_rate double, rec_support bigint")
    reformulation = spark.createDataFrame([
        ("q1", "c3", 4, 10, 0.4), ("q1", "failing", 5, 10, 0.5), ("q1", "q1", 3, 10, 0.3),
    ], "query_key string, rec_query_key string, reformulation_pairs bigint, "
       "reformulation_failed bigint, reformulation_share double")
    lexical = spark.createDataFrame([
        ("q1", "c1", 0.8, ""), ("q1", "c2", 0.79, ""), ("q1", "c4", 0.95, ""),
        ("q1", "unsupported", 0.99, ""),
    ], "query_key string, rec_query_key string, lexical_similarity double, lexical_note string")
    semantic = spark.createDataFrame([
        ("q1", "c1", 0.9, 0.1, "exact"), ("q1", "c3", 0.7, 0.2, "exact"),
    ], "query_key string, rec_query_key string, similarity double, cluster_distance double, "
       "search string")
    return targets, candidates, {"reformulation": reformulation, "lexical": lexical,
                                 "semantic": semantic}


def test_blend_recommends_only_recommendable_distinct_queries(spark: SparkSession) -> None:
    targets, candidates, sources = blend_inputs(spark)
    config = load_config(None, []).recommend
    weights = Weights(2.0, 1.0, 0.5, 0.5)
    out = blend(targets, candidates, sources, weights, config).toPandas()
    q1 = out[out["query_key"] == "q1"].sort_values("rank")
    # c1 and c2 differ only by a size (c1 scores higher: semantic + lexical); "failing",
    # "unsupported" and q1 itself are no candidates; c3 (reformulated to: 2 * sqrt(0.4))
    # outranks c1, then c4 (lexical 0.95 + success 0.5 * 0.9).
    assert q1["rec_query_key"].tolist() == ["c3", "c1", "c4"]
    assert q1["rank"].tolist() == [1, 2, 3]
    c3, c1 = q1.iloc[0], q1.iloc[1]
    assert list(c3["sources"]) == ["reformulation", "semantic"]
    assert list(c1["sources"]) == ["lexical", "semantic"]
    assert c3["score"] == pytest.approx(2 * 0.4 ** 0.5 + 0.5 * 0.7 + 0.5 * 0.7)
    assert c1["score"] == pytest.approx(0.8 + 0.5 * 0.9 + 0.5 * 0.6)
    assert bool(c3["cluster_trusted"]) is False and bool(c3["rec_cluster_trusted"]) is False
    assert "4 of the query's 10 failed searches were followed by it (40%)" in c3["reason"]
    assert "the query's cluster 0 is not trusted" in c3["reason"]
    assert "the suggestion's cluster 3 is not trusted" in c3["reason"]
    assert "not trusted" not in c1["reason"].replace("the query's cluster 0 is not trusted", "")
    lonely = out[out["query_key"] == "q2"]
    assert len(lonely) == 1 and pd.isna(lonely["rank"].iloc[0])
    assert lonely["reason"].iloc[0] == (
        "failed (label); no suggestion from reformulation, lexical, semantic")
    allowed = set(candidates.toPandas()["rec_query_key"]) - {"q1"}
    assert set(out["rec_query_key"].dropna()) <= allowed


def test_seed_rule_ranks_by_cosine_without_diversity(spark: SparkSession) -> None:
    targets, candidates, sources = blend_inputs(spark)
    config = load_config(None, []).recommend
    out = blend(targets, candidates, {"semantic": sources["semantic"]}, Weights.only("semantic"),
                config, diverse=False).toPandas()
    q1 = out[out["query_key"] == "q1"].sort_values("rank")
    assert q1["rec_query_key"].tolist() == ["c1", "c3"]
    assert q1["score"].tolist() == pytest.approx([0.9, 0.7])


def test_ranking_metrics_against_a_hand_computation(spark: SparkSession) -> None:
    cases = spark.createDataFrame([("a", "x"), ("a", "y"), ("b", "z"), ("c", "w")],
                                  "query_key string, target_key string")
    suggestions = spark.createDataFrame(
        [("a", 1, "x"), ("a", 2, "v"), ("a", 3, "y"), ("b", 1, "u"), ("b", 6, "z"),
         ("c", None, None)], "query_key string, rank int, rec_query_key string")
    got = {m: v for _, _, m, v in ranking_metrics(cases, suggestions, "m")}
    assert got["n_evaluated"] == 4 and got["n_queries"] == 3
    assert got["hit_at_1"] == pytest.approx(1 / 4)
    assert got["hit_at_5"] == pytest.approx(2 / 4)
    assert got["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 6 + 0) / 4)


def test_held_out_evaluation_recovers_a_known_reformulation(spark: SparkSession) -> None:
    rows = []
    for s in range(200):
        rows += [event(f"s{s}", 0, "misspelt"), event(f"s{s}", 20, "right", clicks=1)]
        if s % 2:
            rows += [event(f"s{s}", 200, "vague"), event(f"s{s}", 230, "other", clicks=1)]
    searches = searches_of(spark.createDataFrame(rows, EVENTS))
    held = held_out(F.col("session_id"), 0.25, seed=7)
    n_held = searches.where(held).select("session_id").distinct().count()
    assert 30 < n_held < 70
    candidates = spark.createDataFrame([("right", "right", 0, True, 0.8, 0.9, 100)],
                                       "rec_query_key string, rec_query string, "
                                       "rec_cluster_id int, rec_cluster_trusted boolean, "
                                       "rec_cluster_success_rate double, "
                                       "rec_success_rate double, rec_support bigint")
    cases = evaluation_cases(next_searches(searches.where(held), 60.0), candidates)
    assert cases.count() == n_held
    train = mine_reformulations(searches.where(~held), 60.0).select(
        "query_key", F.col("next_query_key").alias("rec_query_key"),
        F.col("pairs").alias("reformulation_pairs"),
        F.col("failed_searches").alias("reformulation_failed"),
        F.col("share").alias("reformulation_share"))
    targets = spark.createDataFrame(
        [("misspelt", "misspelt", 0, True, False, 0.1)],
        "query_key string, query string, cluster_id int, cluster_trusted boolean, "
        "label_success boolean, p_success double")
    config = load_config(None, []).recommend
    suggestions = blend(targets, candidates, {"reformulation": train},
                        Weights.only("reformulation"), config, diverse=False)
    got = {m: v for _, _, m, v in ranking_metrics(cases, suggestions, "m")}
    assert got["n_evaluated"] == n_held and got["hit_at_1"] == 1.0 and got["mrr"] == 1.0
