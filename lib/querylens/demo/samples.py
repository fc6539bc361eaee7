"""Realistic distinct fashion queries for tests and benchmarks, from the demo vocabulary."""

from __future__ import annotations

import numpy as np

from querylens.demo import vocabulary as vocab

TEMPLATES = (
    "{brand} {category}",
    "{brand} {line}",
    "{colour} {category}",
    "{gender} {category}",
    "{brand} {gender} {category}",
    "{colour} {brand} {category}",
    "{brand} {line} {colour}",
    "{gender} {colour} {category}",
    "{material} {category} {gender}",
    "{brand} {line} {gender} {category}",
    "{colour} {material} {category}",
    "{gender} {colour} {material} {category} {size}",
    "{misspelling} {category}",
    "{foreign}",
    "{vague}",
)


def fashion_queries(n: int, seed: int = 0) -> list[str]:
    """`n` distinct lower-case fashion search queries as the job sees them: typed text plus
    filter values (about 6 CLIP tokens on average, 8 with the start and end tokens)."""
    rng = np.random.default_rng(seed)
    parts = {
        "brand": vocab.BRANDS,
        "category": tuple(c for c, _ in vocab.CATEGORIES),
        "colour": vocab.COLOURS,
        "material": vocab.MATERIALS,
        "gender": tuple(g for g, _ in vocab.GENDER_TERMS),
        "size": vocab.SIZES,
        "misspelling": tuple(m for m, _ in vocab.MISSPELLINGS),
        "foreign": tuple(f for f, *_ in vocab.NON_ENGLISH),
        "vague": vocab.VAGUE_QUERIES,
    }
    filters = (vocab.GENDERS, tuple(c for c, _ in vocab.CATEGORIES), vocab.COLOURS)
    lines = vocab.PRODUCT_LINES
    seen: dict[str, None] = {}
    while len(seen) < n:
        m = 2 * (n - len(seen)) + 64
        template = rng.integers(len(TEMPLATES), size=m)
        line = rng.integers(len(lines), size=m)
        draws = {key: rng.integers(len(options), size=m) for key, options in parts.items()}
        use = rng.random((m, len(filters))) < (0.6, 0.4, 0.3)
        picks = [rng.integers(len(options), size=m) for options in filters]
        for i in range(m):
            values = {key: parts[key][draws[key][i]] for key in parts}
            text = TEMPLATES[template[i]]
            if "{line}" in text:
                values["brand"], values["line"], values["category"] = lines[line[i]]
            words = [text.format(**values)]
            words += [options[pick[i]] for options, pick, on in zip(
                filters, picks, use[i], strict=True) if on]
            seen.setdefault(" ".join(words), None)
    return list(seen)[:n]
