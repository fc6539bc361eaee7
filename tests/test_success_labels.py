from fractions import Fraction

import pytest
from pyspark.sql import DataFrame, SparkSession

from querylens.runtime.config import load_config
from querylens.success.labels import cluster_success, label_queries, success_scores

QUERY_SCHEMA = (
    "query_key string, n_searches long, n_sessions long, clicks long, add_to_bags long, "
    "purchases long, searches_with_click long, searches_with_add_to_bag long, "
    "searches_with_purchase long"
)


def queries(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, QUERY_SCHEMA)


def success_config(*overrides: str):
    return load_config(None, ["success.prior_strength=10", "success.min_support=5",
                              *overrides]).success


@pytest.fixture(scope="module")
def four(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    q = queries(spark, [
        ("a", 10, 9, 7, 2, 1, 5, 2, 1),
        ("b", 20, 15, 12, 6, 5, 10, 5, 5),
        ("c", 2, 2, 3, 0, 0, 2, 0, 0),
        ("d", 8, 8, 0, 0, 0, 0, 0, 0),
    ])
    a = spark.createDataFrame([("a", 0), ("b", 0), ("c", 0), ("d", 1)],
                              "query_key string, cluster_id int")
    return q, a


def by_key(df: DataFrame) -> dict:
    return {r["query_key"]: r.asDict() for r in df.collect()}


def test_scores_per_search_are_weighted_rates(spark, four) -> None:
    got = by_key(success_scores(four[0], success_config()))
    expected = {"a": Fraction(13, 70), "b": Fraction(2, 7), "c": Fraction(1, 7), "d": 0}
    for key, value in expected.items():
        assert got[key]["success_score"] == pytest.approx(float(value), abs=1e-12)
    assert got["b"]["support"] == 20


def test_scores_per_session_cap_each_rate_at_one(spark) -> None:
    q = queries(spark, [("s", 10, 4, 6, 1, 0, 0, 0, 0)])
    got = by_key(success_scores(q, success_config("success.unit=session")))["s"]
    assert got["support"] == 4
    assert got["success_score"] == pytest.approx((1.0 + 2 * 0.25) / 7, abs=1e-12)


def test_labels_shrink_toward_cluster_rate_and_flag_low_support(spark, four) -> None:
    labels, stats = label_queries(*four, success_config("success.threshold=0.2"))
    got = by_key(labels)
    prior = Fraction(55, 224)
    assert got["a"]["prior_mean"] == pytest.approx(float(prior), abs=1e-12)
    smoothed = {"a": Fraction(966, 4480), "b": Fraction(1830, 6720), "c": Fraction(614, 2688),
                "d": Fraction(0)}
    for key, value in smoothed.items():
        assert got[key]["smoothed_score"] == pytest.approx(float(value), abs=1e-12)
    assert [got[k]["success"] for k in "abcd"] == [True, True, None, False]
    assert [got[k]["low_support"] for k in "abcd"] == [False, False, True, False]
    assert (stats.labelled, stats.successful, stats.low_support, stats.problem) == (3, 2, 1, None)


def test_quantile_threshold_is_the_median_of_supported_smoothed_scores(spark, four) -> None:
    labels, stats = label_queries(*four, success_config("success.threshold_quantile=0.5"))
    assert stats.threshold == pytest.approx(966 / 4480, abs=1e-12)
    assert [by_key(labels)[k]["success"] for k in "abd"] == [True, True, False]


def test_cluster_success_rates(spark, four) -> None:
    labels, _ = label_queries(*four, success_config("success.threshold=0.25"))
    got = {r["cluster_id"]: r for r in cluster_success(labels).collect()}
    assert (got[0]["n_queries"], got[0]["n_labelled"], got[0]["n_successful"]) == (3, 2, 1)
    assert got[0]["success_rate"] == pytest.approx(0.5)
    assert got[1]["success_rate"] == 0.0
    assert got[0]["support"] == 32


def test_no_interactions_is_explained_not_labelled_success(spark) -> None:
    q = queries(spark, [(k, 10, 5, 0, 0, 0, 0, 0, 0) for k in "xyz"])
    a = spark.createDataFrame([(k, 0) for k in "xyz"], "query_key string, cluster_id int")
    labels, stats = label_queries(q, a, success_config())
    assert "no interactions at all" in stats.problem
    assert {r["success"] for r in labels.collect()} == {False}


def test_everything_low_support_gives_no_labels(spark, four) -> None:
    labels, stats = label_queries(*four, success_config("success.min_support=100"))
    assert stats.labelled == 0 and "min_support=100" in stats.problem
    assert {r["success"] for r in labels.collect()} == {None}


def test_missing_column_is_named(spark) -> None:
    bad = spark.createDataFrame([("a", 1)], "query_key string, n_searches long")
    with pytest.raises(ValueError, match="n_sessions"):
        success_scores(bad, success_config())
