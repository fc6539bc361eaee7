"""Blank text: one definition for Spark columns and for Python values on the workers."""

from __future__ import annotations

from pyspark.sql import Column


def is_blank(column: Column) -> Column:
    """Null, empty or whitespace-only text, with Python's `str.isspace` meaning of whitespace
    (Java's Unicode `\\s` plus the separators U+001C-U+001F)."""
    return column.isNull() | column.rlike(r"(?U)^[\s\x1c-\x1f]*$")


def is_blank_text(text: object) -> bool:
    """True unless `text` is a string with something other than whitespace (`str.isspace`)."""
    return not isinstance(text, str) or text == "" or text.isspace()
