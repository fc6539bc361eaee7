"""The Fashion CLIP path is the real one: same vectors as `CLIPModel.get_text_features`."""

from __future__ import annotations

import random
import string
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from querylens.embed.clip_tokenizer import clip_tokenizer_folder
from querylens.embed.encoders import ClipTextEncoder, load_encoder
from querylens.embed.tokens import HFTokenizer, WordCachedTokenizer, fast_tokenizer
from querylens.embed.udf import embed_column
from tests.embed_helpers import QUERIES, clip_reference, save_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def clip_tokenizer():  # noqa: ANN201
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(clip_tokenizer_folder()))


def test_tokenizer_built_from_open_clip_vocab_gives_clip_ids(clip_tokenizer) -> None:  # noqa: ANN001
    assert len(clip_tokenizer) == 49408
    assert clip_tokenizer("a photo of a cat")["input_ids"] == [
        49406, 320, 1125, 539, 320, 2368, 49407]


def test_word_cached_tokenizer_matches_hf_tokenizer_on_odd_text(clip_tokenizer) -> None:  # noqa: ANN001
    rnd = random.Random(0)
    alphabet = list(
        "abcxyz ABC 0123456789'’-&./!?,\t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u200b\ufeffΣσςΑΣ İıßẞé"
        "e\u0301\u0308ñ中文日本語한국어عربيहिन्दी👟👗🏽\u200d♀️🇫🇷©™€<|>"
    ) + ["<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "'s", "don't", "x" * 90]
    ascii_alphabet = [*string.printable, "'s", "'ll", "<|endoftext|>", "<|ENDOFTEXT|>", " "]
    texts = [
        "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 40)))
        for chars in (alphabet, ascii_alphabet) for _ in range(2000)
    ]
    texts += QUERIES + ["", " ", "word " * 100]
    tokenizer = fast_tokenizer(clip_tokenizer, 77)
    assert isinstance(tokenizer, WordCachedTokenizer)
    tokens = tokenizer(texts)
    expected = clip_tokenizer(texts, truncation=True, max_length=77)["input_ids"]
    for i, ids in enumerate(expected):
        assert tokens.ids[tokens.starts[i] : tokens.starts[i] + tokens.lengths[i]].tolist() == ids
    full = [len(ids) for ids in clip_tokenizer(texts, truncation=False)["input_ids"]]
    np.testing.assert_array_equal(tokens.truncated, np.array(full) > 77)
    assert tokens.truncated.sum() > 10


def test_padded_rows_pad_each_batch_only_to_its_longest(clip_tokenizer) -> None:  # noqa: ANN001
    tokens = HFTokenizer(clip_tokenizer, 77)(["black dress", "a", "nike air max 90 white"])
    padded = tokens.padded(np.array([1, 0]), pad_id=-1)
    assert padded.shape == (2, 4)
    assert padded.tolist() == [[49406, 320, 49407, -1], [49406, 1449, 2595, 49407]]


def test_clip_encoder_equals_get_text_features(tiny_clip: Path) -> None:
    encoder = load_encoder(str(tiny_clip), "cpu", normalize=True, batch_size=4)
    assert isinstance(encoder, ClipTextEncoder)
    assert (encoder.dim, encoder.max_tokens, encoder.dtype) == (24, 77, "float32")
    vectors = encoder.encode(QUERIES)
    assert vectors.dtype == np.float32
    assert np.abs(vectors - clip_reference(tiny_clip, QUERIES)).max() < 1e-5


def test_clip_encoder_without_normalisation_equals_raw_features(tiny_clip: Path) -> None:
    encoder = load_encoder(str(tiny_clip), "cpu", normalize=False)
    raw = clip_reference(tiny_clip, QUERIES, normalize=False)
    assert np.abs(encoder.encode(QUERIES) - raw).max() < 1e-5
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).max() > 1e-3


def test_batch_order_and_padding_do_not_change_vectors(tiny_clip: Path) -> None:
    alone = load_encoder(str(tiny_clip), "cpu", batch_size=1)
    mixed = load_encoder(str(tiny_clip), "cpu", batch_size=3)
    singles = np.stack([alone.encode([q])[0] for q in QUERIES])
    order = np.random.default_rng(1).permutation(len(QUERIES))
    shuffled = mixed.encode([QUERIES[i] for i in order])
    assert np.abs(shuffled - singles[order]).max() < 1e-5
    doubled = mixed.encode(QUERIES + QUERIES[::-1])
    assert np.abs(doubled[: len(QUERIES)] - doubled[len(QUERIES) :][::-1]).max() < 1e-5


def test_spark_udf_gives_get_text_features_vectors(spark: SparkSession, tiny_clip: Path) -> None:
    texts = [*QUERIES, None, "", "   "]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, query string")
    rows = (df.repartition(2).withColumn("e", embed_column(F.col("query"), str(tiny_clip),
                                                           "auto", True, 3))
            .orderBy("id").collect())
    assert [r.e is None for r in rows] == [False] * len(QUERIES) + [True] * 3
    got = np.array([r.e for r in rows[: len(QUERIES)]], dtype=np.float32)
    assert got.shape == (len(QUERIES), 24)
    assert np.abs(got - clip_reference(tiny_clip, QUERIES)).max() < 1e-5


def test_tasks_limit_torch_to_their_cores_and_see_no_gpu(spark: SparkSession) -> None:
    def probe(batches):  # noqa: ANN001, ANN202
        import pandas as pd
        import torch

        from querylens.embed.encoders import task_gpu_addresses
        from querylens.embed.udf import use_task_cores

        torch.set_num_threads(3)
        use_task_cores()
        for _ in batches:
            yield pd.DataFrame({"threads": [torch.get_num_threads()],
                                "gpus": [len(task_gpu_addresses())]})

    rows = spark.range(2).repartition(2).mapInPandas(probe, "threads int, gpus int").collect()
    assert {(r.threads, r.gpus) for r in rows} == {(1, 0)}
