"""Embedding as an iterator pandas UDF, the model loaded once per Python worker."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import Column
from pyspark.sql.functions import pandas_udf

from querylens.embed.encoders import Encoder, load_encoder

ENCODERS: dict[tuple[str, str, bool, int], Encoder] = {}


def worker_encoder(model: str, device: str, normalize: bool, batch_size: int) -> Encoder:
    """The encoder for these settings, loaded on first use in this Python process."""
    key = (model, device, normalize, batch_size)
    if key not in ENCODERS:
        ENCODERS[key] = load_encoder(model, device, normalize, batch_size)
    return ENCODERS[key]


def embed_column(
    texts: Column, model: str, device: str = "auto", normalize: bool = True, batch_size: int = 256
) -> Column:
    """An `array<float>` column of embeddings of `texts`."""

    @pandas_udf("array<float>")  # type: ignore[call-overload]
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        encoder = worker_encoder(model, device, normalize, batch_size)
        for batch in batches:
            vectors = encoder.encode(batch.fillna("").tolist())
            yield pd.Series(list(vectors))

    return embed(texts)
