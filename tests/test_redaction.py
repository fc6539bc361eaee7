"""PII redaction: what must be redacted and a corpus of near-misses that must survive."""

import pytest

from querylens.ingest.normalize import gtin_valid, is_card_number, luhn_valid, normalize_text
from querylens.runtime.config import ConfigError, NormalizeConfig, load_config


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("4111 - 1111 - 1111 - 1111", "[card]"),
        ("visa 4111.1111.1111.1111 lost", "visa [card] lost"),
        ("size 8 4111 1111 1111 1111", "size 8 [card]"),
        ("amex 3782 822463 10005", "amex [card]"),
        ("5555555555554444 and 4012888888881881", "[card] and [card]"),
        ("jane%40example.com", "[email]"),
        ("mail jane.doe%40example.co.uk%20boots", "mail [email] boots"),
        ("call%200207%20946%200958", "call [phone]"),
        ("call 0207 946 0958 about boots", "call [phone] about boots"),
        ("ring me 07911 123456", "ring me [phone]"),
        ("+33 1 42 68 53 00 parfum", "[phone] parfum"),
        ("support (415) 555-2671", "support [phone]"),
    ],
)
def test_personal_data_is_found(raw: str, expected: str) -> None:
    assert normalize_text(raw, NormalizeConfig()) == expected


NEAR_MISSES = [
    "air max 90 95 97 270",
    "nike air max 2090 90",
    "yeezy 350 v2 700 500",
    "levis 501 502 505 510 511 512",
    "jeans 32x34 30x32 w32 l34",
    "dress 2019 2020 2021 collection",
    "size 10 uk 8 eu 42 us 11",
    "isbn 978-0-306-40615-7",
    "isbn 9780306406157",
    "ean 4006381333931",
    "ean 5061622519962",
    "gtin 5143987542837",
    "upc 036000291452",
    "sku 000123456789 ab-1234567",
    "art. 0706 5555 001",
    "art. 506.5555.001",
    "style 9123-4567-88",
    "item 330 4567 2219 01",
    "model rx-100 vii 24-200mm",
    "ref 4111 1111 1111 1112",
    "order 1234 5678 9012 3456",
    "100% cotton 50% off",
    "20 x 30 x 40 cm box",
]


@pytest.mark.parametrize("raw", NEAR_MISSES)
def test_near_misses_survive(raw: str) -> None:
    assert normalize_text(raw, NormalizeConfig()) == raw


def test_card_checks() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert gtin_valid("4006381333931") and gtin_valid("9780306406157")
    assert luhn_valid("5061622519962") and not is_card_number("5061622519962")
    assert is_card_number("4111111111111111") and not is_card_number("9111111111111111")


def test_phone_regions_are_configurable() -> None:
    us_only = NormalizeConfig(phone_regions=["US"])
    assert normalize_text("call 0207 946 0958", us_only) == "call 0207 946 0958"
    assert normalize_text("call +44 20 7946 0958", us_only) == "call [phone]"
    assert load_config(None, ["normalize.phone_regions=[FR]"]).normalize.phone_regions == ["FR"]
    with pytest.raises(ConfigError, match="normalize.phone_regions"):
        load_config(None, ["normalize.phone_regions=[XX]"])
