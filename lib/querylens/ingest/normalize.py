"""Query text normalisation and the stable query key."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from querylens.runtime.config import NormalizeConfig
from querylens.runtime.text import is_blank

WHITESPACE = re.compile(r"\s+")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffd]")
INVISIBLE = re.compile(r"[\u200b\u2060\ufeff]")
PII_PATTERNS = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "card": re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"),
    "phone": re.compile(r"(?<![\w+])\+?\d(?:[ ().-]{0,2}\d){8,14}(?!\d)"),
}


def placeholder(kind: str) -> str:
    """The text that replaces redacted personal data of `kind`."""
    return f"[{kind}]"


def redact_pii(text: str) -> str:
    """Replace emails, card-like digit runs and phone numbers with placeholders."""
    for kind, pattern in PII_PATTERNS.items():
        text = pattern.sub(placeholder(kind), text)
    return text


def normalize_text(text: str | None, config: NormalizeConfig) -> str | None:
    """Unicode-normalise, redact personal data, lower-case, drop controls, collapse spaces."""
    if text is None:
        return None
    text = unicodedata.normalize(config.unicode_form, text)
    if config.redact_pii:
        text = redact_pii(text)
    if config.lowercase:
        text = text.lower()
    text = WHITESPACE.sub(" ", CONTROL.sub(" ", INVISIBLE.sub("", text))).strip()
    return text[: config.max_chars].rstrip() or None


def normalize_column(column: Column, config: NormalizeConfig) -> Column:
    """`normalize_text` applied to a string column on the executors."""

    @pandas_udf("string")  # type: ignore[call-overload]
    def normalize(texts: pd.Series) -> pd.Series:
        return texts.map(lambda t: normalize_text(t, config) if isinstance(t, str) else None)

    return normalize(column)


def search_text(query: Column, filters: list[Column]) -> Column:
    """The query followed by its non-empty filter values, in the configured order."""
    values = [F.when(F.trim(f) != "", f) for f in filters]
    return F.concat_ws(" ", query, *values)


def query_key(normalized: Column) -> Column:
    """Stable 16-hex-digit key: the first 64 bits of SHA-256 of the normalised text."""
    return F.substring(F.sha2(normalized, 256), 1, 16)


def with_normalized_query(
    events: DataFrame, filter_columns: list[str], config: NormalizeConfig
) -> DataFrame:
    """Add `query_norm` (null where the typed query is null or blank) and `query_key`."""
    typed = F.col("query")
    text = search_text(typed, [F.col(c).cast("string") for c in filter_columns])
    normalized = F.when(~is_blank(typed), normalize_column(text, config))
    return events.withColumn("query_norm", normalized).withColumn(
        "query_key", query_key(F.col("query_norm"))
    )
