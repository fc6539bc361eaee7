"""Blank text: one definition for Spark columns and for Python values on the workers."""

from __future__ import annotations

from pyspark.sql import Column


def is_blank(column: Column) -> Column:
    """Null, empty or whitespace-only text (Unicode whitespace, Java regex `(?U)\\s`)."""
    return column.isNull() | column.rlike(r"(?U)^\s*$")


def is_blank_text(text: object) -> bool:
    """True unless `text` is a string with something other than whitespace (`str.isspace`)."""
    return not isinstance(text, str) or text == "" or text.isspace()
