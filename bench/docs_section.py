"""Write a benchmark's table into docs/BENCHMARKS.md between its begin/end markers."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, block: str, begin: str, end: str, heading: str) -> None:
    """Replace the text between `begin` and `end` in `path` with `block` (which carries both
    markers), or append `heading` and `block` when the markers are not there yet."""
    text = path.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n{block}\n"
    path.write_text(text)
