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
    "card": re.compile(r"(?<!\d)\d(?:(?:[ \t]*[-.][ \t]*|[ \t]+)?\d){12,}(?!\d)"),
    "phone": re.compile(r"\d(?:[ ().\-/]{0,3}\d){6,}"),
}
"""Candidates for each kind of personal data; a card candidate is redacted only where whole
digit groups of it pass `is_card_number`, a phone candidate only where `phonenumbers` finds a
valid, conventionally grouped number of one of `normalize.phone_regions` (or one written with
its country code)."""
URL_ESCAPE = re.compile(r"%([2-7][0-9A-Fa-f])")
DIGIT_GROUP = re.compile(r"\d+")
CARD_LENGTHS = range(13, 20)
GTIN_LENGTHS = (8, 12, 13, 14)


def placeholder(kind: str) -> str:
    """The text that replaces redacted personal data of `kind`."""
    return f"[{kind}]"


def url_decoded(text: str) -> str:
    """`text` with percent-escapes of printable ASCII decoded (`jane%40example.com`)."""
    return URL_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text) if "%" in text else text


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def gtin_valid(digits: str) -> bool:
    """The GS1 check digit of an EAN-8, UPC-A, EAN-13 / ISBN-13 or GTIN-14."""
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(ch) * (3 if i % 2 == 0 else 1) for i, ch in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


CARD_NETWORKS = (
    (re.compile(r"4"), (13, 16, 19)),  # Visa
    (re.compile(r"5[1-5]|2(2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)"), (16,)),  # Mastercard
    (re.compile(r"3[47]"), (15,)),  # American Express
    (re.compile(r"3(0[0-5]|[689])"), (14, 16)),  # Diners Club
    (re.compile(r"35(2[89]|[3-8]\d)"), (16, 17, 18, 19)),  # JCB
    (re.compile(r"6(011|4[4-9]|5|2)"), (16, 17, 18, 19)),  # Discover, UnionPay
    (re.compile(r"5[06-9]|6"), (16, 17, 18, 19)),  # Maestro
)


def is_card_number(digits: str) -> bool:
    """A number of a card network's prefix and length (`CARD_NETWORKS`) that passes the Luhn
    check; a number that is also a valid EAN / ISBN / GTIN of its length is taken for a
    product code."""
    if not any(prefix.match(digits) and len(digits) in lengths
               for prefix, lengths in CARD_NETWORKS) or not luhn_valid(digits):
        return False
    return not (len(digits) in GTIN_LENGTHS and gtin_valid(digits))


def redact_cards(text: str) -> str:
    """Replace card numbers (digit groups separated by spaces, dashes or dots) with [card]."""
    def replace(match: re.Match[str]) -> str:
        return redact_card_run(match.group(0))

    return PII_PATTERNS["card"].sub(replace, text)


def redact_card_run(run: str) -> str:
    """`run` with each leftmost-longest span of whole digit groups that is a card number
    replaced by [card]."""
    groups = [(g.start(), g.end()) for g in DIGIT_GROUP.finditer(run)]
    out, done, i = [], 0, 0
    while i < len(groups):
        digits, best = "", None
        for j in range(i, len(groups)):
            digits += run[groups[j][0]:groups[j][1]]
            if len(digits) > CARD_LENGTHS.stop - 1:
                break
            if is_card_number(digits):
                best = j
        if best is None:
            i += 1
            continue
        out += [run[done:groups[i][0]], placeholder("card")]
        done, i = groups[best][1], best + 1
    return "".join(out) + run[done:]


def redact_phones(text: str, regions: tuple[str, ...]) -> str:
    """Replace the phone numbers `phonenumbers` finds with [phone]: valid numbers of `regions`
    (or with a country code) whose digits are grouped as that country writes them, so model
    numbers, sizes, years and product codes are not; runs on executors, so imports it here."""
    if not PII_PATTERNS["phone"].search(text):
        return text
    import phonenumbers

    for region in regions:
        found = list(phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.STRICT_GROUPING))
        for match in reversed(found):
            text = text[:match.start] + placeholder("phone") + text[match.end:]
        if not PII_PATTERNS["phone"].search(text):
            break
    return text


DEFAULT_PHONE_REGIONS = ("GB", "US")


def redact_pii(text: str, phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> str:
    """URL-decode, then replace emails, card numbers and phone numbers with placeholders."""
    text = url_decoded(text)
    text = PII_PATTERNS["email"].sub(placeholder("email"), text)
    return redact_phones(redact_cards(text), phone_regions)


def normalize_text(text: str | None, config: NormalizeConfig) -> str | None:
    """Unicode-normalise, redact personal data, lower-case, drop controls, collapse spaces."""
    if text is None:
        return None
    text = unicodedata.normalize(config.unicode_form, text)
    if config.redact_pii:
        text = redact_pii(text, tuple(config.phone_regions))
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
