"""The query_embeddings cache: reruns embed nothing, new logs embed only their new queries."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.demo.samples import fashion_queries
from querylens.embed.cache import TABLE, embed_queries
from querylens.embed.encoders import ModelLoadError
from querylens.ingest.normalize import query_key
from querylens.runtime.config import EmbedConfig
from tests.embed_helpers import clip_reference, save_tiny_clip

LONG = "the north face nuptse puffer jacket women black xl " * 8


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip_cache"))


def queries_df(spark: SparkSession, texts: list[str | None]) -> DataFrame:
    df = spark.createDataFrame([(t,) for t in texts], "query string")
    return df.withColumn("query_key", query_key(F.col("query")))


def fresh_database(spark: SparkSession, name: str) -> str:
    spark.sql(f"DROP DATABASE IF EXISTS {name} CASCADE")
    spark.sql(f"CREATE DATABASE {name}")
    return name


def test_rerun_embeds_nothing_and_ten_percent_new_embeds_only_those(
    spark: SparkSession, tiny_clip: Path, tmp_path: Path
) -> None:
    database = fresh_database(spark, "embed_cache_runs")
    config = EmbedConfig(model=str(tiny_clip), batch_size=16, onnx_dir=str(tmp_path))
    old = fashion_queries(180, seed=3)
    day1 = queries_df(spark, [*old, LONG, None, "", "   ", old[0]])

    first = embed_queries(spark, day1, config, database, run_id="r1")
    assert (first.embedded, first.reused, first.skipped, first.truncated) == (181, 0, 3, 1)
    assert first.devices == ["cpu/onnx-float32"] and not first.fallback
    assert first.agreement is not None and first.agreement["min_cosine"] > 0.9999

    second = embed_queries(spark, day1, config, database, run_id="r2")
    assert (second.embedded, second.reused, second.skipped) == (0, 181, 3)
    assert (second.backend, second.precision, second.agreement) == ("onnx", "onnx-float32", None)

    new = [q for q in fashion_queries(400, seed=4) if q not in set(old)][:20]
    day2 = queries_df(spark, [*old, LONG, *new])
    third = embed_queries(spark, day2, config, database, run_id="r3")
    assert (third.embedded, third.reused, third.truncated) == (20, 181, 0)

    table = spark.table(f"{database}.{TABLE}")
    assert table.count() == 201
    assert table.select("query_key", "model_id", "model_revision").distinct().count() == 201
    run3 = table.where(F.col("embedded_run_id") == "r3").orderBy("query").collect()
    assert sorted(r.query for r in run3) == sorted(new)
    got = np.array([r.embedding for r in run3], dtype=np.float32)
    assert np.abs(got - clip_reference(tiny_clip, [r.query for r in run3])).max() < 1e-5
    assert {r.model_revision for r in run3} == {first.model_revision}


def test_fallback_is_used_loudly_and_recorded(
    spark: SparkSession, tiny_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = fresh_database(spark, "embed_cache_fallback")
    config = EmbedConfig(model="acme/fashion-clip-not-cached", fallback=str(tiny_clip))
    logging.getLogger("querylens").addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="querylens"):
            stats = embed_queries(spark, queries_df(spark, ["black dress", "red heels"]),
                                  config, database, run_id="fb")
    finally:
        logging.getLogger("querylens").removeHandler(caplog.handler)
    assert stats.fallback and stats.embedded == 2
    assert stats.requested_model == "acme/fashion-clip-not-cached"
    assert stats.model_id == str(tiny_clip.resolve())
    assert "acme/fashion-clip-not-cached" in (stats.fallback_reason or "")
    assert "EMBEDDING MODEL FALLBACK" in caplog.text
    rows = spark.table(f"{database}.{TABLE}").select("requested_model", "model_id").distinct()
    assert [tuple(r) for r in rows.collect()] == [
        ("acme/fashion-clip-not-cached", str(tiny_clip.resolve()))]


def test_without_fallback_an_unloadable_model_fails_naming_it(spark: SparkSession) -> None:
    database = fresh_database(spark, "embed_cache_nofallback")
    config = EmbedConfig(model="acme/fashion-clip-not-cached")
    with pytest.raises(ModelLoadError, match="acme/fashion-clip-not-cached.*Hugging Face cache"):
        embed_queries(spark, queries_df(spark, ["black dress"]), config, database)
    assert not spark.catalog.tableExists(f"{database}.{TABLE}")
