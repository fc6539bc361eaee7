"""The ONNX backend: same vectors as torch, a guard that falls back, a cache that never mixes."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from querylens.embed.cache import TABLE, cached_embeddings, embed_queries
from querylens.embed.encoders import SentenceTransformerEncoder, load_encoder
from querylens.embed.onnx import (
    AGREEMENT_SAMPLE,
    OnnxEncoder,
    default_cache_dir,
    export_path,
    exported,
    guarded,
    onnx_encoder,
    ort_threads,
)
from querylens.ingest.normalize import query_key
from querylens.runtime.config import ConfigError, EmbedConfig, load_config
from tests.embed_helpers import QUERIES, clip_reference, copy_minilm, save_tiny_clip


def save_tiny_sentence_transformer(folder: Path, tokenizer_from: Path) -> Path:
    """A tiny random BERT with the MiniLM tokenizer, mean pooling and normalize, saved as a
    sentence-transformers model."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    bert = folder / "bert"
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(bert)
    AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(bert)
    modules = [Transformer(str(bert), max_seq_length=24), Pooling(32, "mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip_onnx"))


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_st_onnx")
    return save_tiny_sentence_transformer(root, copy_minilm(root / "minilm"))


@pytest.fixture
def onnx_dir(tmp_path: Path) -> str:
    return str(tmp_path / "onnx")


def test_onnx_sentence_transformer_gives_the_torch_vectors(tiny_st: Path, onnx_dir: str) -> None:
    from sentence_transformers import SentenceTransformer

    base = load_encoder(str(tiny_st), "cpu", batch_size=4)
    assert isinstance(base, SentenceTransformerEncoder)
    encoder = onnx_encoder(base, onnx_dir)
    texts = [*QUERIES, *AGREEMENT_SAMPLE[:9]]
    reference = SentenceTransformer(str(tiny_st), device="cpu").encode(
        texts, batch_size=64, normalize_embeddings=True)
    encoded = list(encoder.encode_batches([texts[:5], texts[5:]]))
    got = np.concatenate([e.vectors for e in encoded])
    assert got.shape == (len(texts), 32) and encoder.precision == "onnx-float32"
    assert np.abs(got.astype(np.float64) - reference).max() < 1e-5
    truncated = np.concatenate([e.truncated for e in encoded])
    assert truncated.tolist() == [t.startswith("the north face") for t in texts]


def test_onnx_clip_text_tower_gives_get_text_features(tiny_clip: Path, onnx_dir: str) -> None:
    base = load_encoder(str(tiny_clip), "cpu", batch_size=3)
    encoder = onnx_encoder(base, onnx_dir)
    assert np.abs(encoder.encode(QUERIES) - clip_reference(tiny_clip, QUERIES)).max() < 1e-5
    raw = onnx_encoder(load_encoder(str(tiny_clip), "cpu", normalize=False), onnx_dir)
    reference = clip_reference(tiny_clip, QUERIES, normalize=False)
    assert np.abs(raw.encode(QUERIES) - reference).max() < 1e-4
    assert raw.path == encoder.path


def test_export_is_cached_per_revision_and_precision(
    tiny_clip: Path, tmp_path: Path, onnx_dir: str
) -> None:
    base = load_encoder(str(tiny_clip), "cpu")
    fp32 = exported(base, onnx_dir)
    stamp = fp32.stat().st_mtime_ns
    assert exported(base, onnx_dir) == fp32 and fp32.stat().st_mtime_ns == stamp
    int8 = exported(base, onnx_dir, "int8")
    other = load_encoder(str(save_tiny_clip(tmp_path / "other", seed=1)), "cpu")
    paths = {fp32, int8, exported(other, onnx_dir)}
    assert len(paths) == 3 and base.revision.replace(":", "_") in str(fp32)
    assert not [p for p in Path(onnx_dir).rglob("*") if p.name.endswith(".tmp")]


def test_int8_is_its_own_precision_and_close_to_float32(tiny_clip: Path, onnx_dir: str) -> None:
    base = load_encoder(str(tiny_clip), "cpu")
    int8 = onnx_encoder(base, onnx_dir, "int8")
    assert (int8.precision, int8.dtype, int8.backend) == ("onnx-int8", "onnx-int8", "onnx")
    got, want = int8.encode(QUERIES).astype(np.float64), clip_reference(tiny_clip, QUERIES)
    cos = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert 0.95 < cos.min() and np.abs(got - want).max() > 1e-5


def test_guard_passes_a_good_export_and_records_the_agreement(
    tiny_clip: Path, onnx_dir: str
) -> None:
    base = load_encoder(str(tiny_clip), "cpu")
    choice = guarded(base, onnx_dir, "none", 0.999, 0.99)
    assert choice.backend == "onnx" and choice.fallback_reason is None
    assert choice.agreement is not None and choice.agreement.passed
    assert choice.agreement.n == len(AGREEMENT_SAMPLE) and choice.agreement.min_cosine > 0.9999


def test_guard_falls_back_to_torch_on_a_broken_export(
    tiny_clip: Path, tmp_path: Path, onnx_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    base = load_encoder(str(tiny_clip), "cpu")
    other = load_encoder(str(save_tiny_clip(tmp_path / "other", seed=1)), "cpu")
    shutil.copyfile(exported(other, onnx_dir), exported(base, onnx_dir))
    logging.getLogger("querylens").addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="querylens"):
            choice = guarded(base, onnx_dir, "none", 0.999, 0.99)
    finally:
        logging.getLogger("querylens").removeHandler(caplog.handler)
    assert choice.encoder is base and choice.backend == "torch"
    assert choice.agreement is not None and not choice.agreement.passed
    assert choice.agreement.mean_cosine < 0.999
    assert "mean cosine" in (choice.fallback_reason or "")
    assert "EMBEDDING BACKEND FALLBACK" in caplog.text


def test_guard_falls_back_when_the_export_cannot_load(tiny_clip: Path, onnx_dir: str) -> None:
    base = load_encoder(str(tiny_clip), "cpu")
    exported(base, onnx_dir).write_bytes(b"not an onnx model")
    choice = guarded(base, onnx_dir, "none", 0.999, 0.99)
    assert choice.encoder is base and choice.agreement is None
    assert "cannot load the ONNX export" in (choice.fallback_reason or "")


def test_onnx_threads_follow_the_task_cores(spark: SparkSession) -> None:
    import torch

    assert ort_threads() == torch.get_num_threads()
    cpus = int(spark.conf.get("spark.task.cpus", "1") or 1)
    got = spark.range(2, numPartitions=2).rdd.map(lambda _: ort_threads()).collect()
    assert got == [cpus, cpus]


def queries_df(spark: SparkSession, texts: list[str]) -> DataFrame:
    df = spark.createDataFrame([(t,) for t in texts], "query string")
    return df.withColumn("query_key", query_key(F.col("query")))


def test_cache_never_returns_vectors_of_another_backend_or_precision(
    spark: SparkSession, tiny_clip: Path, onnx_dir: str
) -> None:
    database = "embed_onnx_cache"
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    spark.sql(f"CREATE DATABASE {database}")
    texts = QUERIES[:6]
    df = queries_df(spark, texts)
    runs = {
        "torch": EmbedConfig(model=str(tiny_clip), backend="torch"),
        "onnx-float32": EmbedConfig(model=str(tiny_clip), onnx_dir=onnx_dir),
        "onnx-int8": EmbedConfig(model=str(tiny_clip), backend="onnx", quantize="int8",
                                 onnx_dir=onnx_dir, agreement_min_mean_cosine=0.9,
                                 agreement_min_cosine=0.9),
    }
    for precision, config in runs.items():
        stats = embed_queries(spark, df, config, database, run_id=precision)
        assert (stats.embedded, stats.reused, stats.precision) == (6, 0, precision)
        assert not stats.backend_fallback
    again = embed_queries(spark, df, runs["onnx-int8"], database, run_id="again")
    assert (again.embedded, again.reused) == (0, 6)
    assert spark.table(f"{database}.{TABLE}").count() == 18
    base = load_encoder(str(tiny_clip), "cpu")
    reference = clip_reference(tiny_clip, texts)
    for precision in runs:
        rows = cached_embeddings(spark, database, base.model_id, base.revision, precision)
        assert rows is not None
        got = {r.query: (r.device, r.embedding) for r in rows.collect()}
        label = "cpu/float32" if precision == "torch" else f"cpu/{precision}"
        assert sorted(got) == sorted(texts) and {d for d, _ in got.values()} == {label}
        error = np.abs(np.array([got[t][1] for t in texts], dtype=np.float64) - reference).max()
        assert (error > 1e-4) if precision == "onnx-int8" else (error < 1e-5)


def test_backend_fallback_is_recorded_in_the_stats(
    spark: SparkSession, tiny_clip: Path, onnx_dir: str
) -> None:
    database = "embed_onnx_fallback"
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    spark.sql(f"CREATE DATABASE {database}")
    config = EmbedConfig(model=str(tiny_clip), backend="onnx", quantize="int8",
                         onnx_dir=onnx_dir, agreement_min_mean_cosine=1.0)
    stats = embed_queries(spark, queries_df(spark, QUERIES[:3]), config, database, run_id="fb")
    assert stats.backend_fallback and stats.backend == "torch" and stats.precision == "torch"
    assert stats.requested_backend == "onnx" and stats.devices == ["cpu/float32"]
    assert stats.agreement is not None and stats.agreement["min_mean_cosine"] == 1.0
    assert "onnx-int8" in (stats.backend_fallback_reason or "")


def test_onnx_on_a_gpu_is_refused_and_auto_means_torch_there() -> None:
    from querylens.embed.udf import backend_for
    from querylens.runtime.errors import ModelLoadError

    assert backend_for("auto", "cuda:0") == "torch" and backend_for("auto", "cpu") == "onnx"
    assert backend_for("torch", "cpu") == "torch"
    with pytest.raises(ModelLoadError, match="embed.backend 'onnx' runs on the CPU"):
        backend_for("onnx", "cuda")


def test_backend_config_is_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="embed.backend"):
        load_config(None, ["embed.backend=tensorrt"])
    with pytest.raises(ConfigError, match="embed.quantize"):
        load_config(None, ["embed.quantize=int4"])
    with pytest.raises(ConfigError, match="embed.agreement_min_cosine"):
        load_config(None, ["embed.agreement_min_cosine=1.5"])
    config = load_config(None, ["embed.backend=onnx", "embed.quantize=int8"]).embed
    assert (config.backend, config.quantize) == ("onnx", "int8")


def test_onnx_encoder_is_an_encoder(tiny_clip: Path, onnx_dir: str) -> None:
    encoder = onnx_encoder(load_encoder(str(tiny_clip), "cpu"), onnx_dir)
    assert isinstance(encoder, OnnxEncoder) and encoder.encode([]).shape == (0, 24)
    assert (encoder.model_id, encoder.dim, encoder.device) == (str(tiny_clip.resolve()), 24, "cpu")


def test_query_embedder_with_the_onnx_backend_gives_clip_vectors(
    spark: SparkSession, tiny_clip: Path
) -> None:
    from querylens.embed.transformer import QueryEmbedder

    df = spark.createDataFrame([(i, q) for i, q in enumerate(QUERIES)], "id int, query string")
    rows = QueryEmbedder(model=str(tiny_clip), backend="onnx", device="cpu").transform(
        df).orderBy("id").collect()
    got = np.array([r.embedding for r in rows], dtype=np.float64)
    assert np.abs(got - clip_reference(tiny_clip, QUERIES)).max() < 1e-5
    base = load_encoder(str(tiny_clip), "cpu")
    assert export_path(default_cache_dir(), base.model_id, base.revision, "clip-text",
                       "onnx-float32").is_file()
    with pytest.raises(ValueError, match="QueryEmbedder backend must be one of"):
        QueryEmbedder(backend="tensorrt").transform(df)
