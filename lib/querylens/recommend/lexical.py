"""Lexical candidates: spelling variants and near duplicates among the recommendable queries,
by character 3-gram TF-IDF cosine, re-scored with a token edit distance."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from querylens.runtime.workers import Shared, map_batches_with

SCHEMA = "query_key string, rec_query_key string, lexical_similarity double, lexical_note string"
SCHEMA_COLUMNS = [part.strip().split(" ")[0] for part in SCHEMA.split(",")]
TOKEN = re.compile(r"[^\W_]+")


@dataclass
class LexicalIndex:
    """Candidate queries as L2-normalised character 3-gram TF-IDF rows."""

    vectorizer: TfidfVectorizer
    matrix: sparse.csr_matrix
    keys: np.ndarray
    queries: np.ndarray


def build_lexical_index(keys: pd.Series, queries: pd.Series) -> LexicalIndex | None:
    """Fit the 3-gram vocabulary on the candidate queries; None without any candidate."""
    if len(queries) == 0:
        return None
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True,
                                 dtype=np.float32)
    matrix = vectorizer.fit_transform(queries.astype(str).tolist()).tocsr()
    return LexicalIndex(vectorizer, matrix, keys.to_numpy(), queries.to_numpy())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between `a` and `b`."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def token_similarity(a: str, b: str) -> float:
    """1 - edit distance / longer length."""
    return 1.0 - levenshtein(a, b) / max(len(a), len(b), 1)


def coverage(query: str, candidate: str) -> tuple[float, str]:
    """How well `candidate`'s tokens cover `query`'s: the mean over the query's tokens of the
    best similarity to a candidate token or two adjacent ones glued ("newbalance"), and a note
    naming the close non-identical matches."""
    mine, theirs = TOKEN.findall(query), TOKEN.findall(candidate)
    if not mine or not theirs:
        return 0.0, ""
    pairs = [(a + b, f"{a} {b}") for a, b in zip(theirs, theirs[1:], strict=False)]
    best: list[float] = []
    variants: list[str] = []
    for token in mine:
        sims = [(token_similarity(token, t), t) for t in theirs]
        sims += [(token_similarity(token, glued), spaced) for glued, spaced in pairs]
        score, match = max(sims)
        best.append(score)
        if match != token and score >= 0.6:
            variants.append(f"{token}~{match}")
    return float(np.mean(best)), ", ".join(variants)


def lexical_batch(batch: pd.DataFrame, index: LexicalIndex, k: int,
                  floor: float) -> pd.DataFrame:
    """Per query of `batch` (query_key, query), the top 3k candidates by 3-gram cosine, scored
    (cosine + coverage) / 2 with the better coverage of the two directions (the candidate
    covering the query, or the query covering a shorter candidate: "hugo bos sunglasses" ->
    "hugo boss"), and the best k at or above `floor`; never the query itself."""
    rows: list[tuple[str, str, float, str]] = []
    if batch.empty:
        return pd.DataFrame(rows, columns=SCHEMA_COLUMNS)
    texts = batch["query"].astype(str).tolist()
    sims = (index.vectorizer.transform(texts) @ index.matrix.T).tocsr()
    keys = batch["query_key"].to_numpy()
    for r in range(sims.shape[0]):
        start, end = sims.indptr[r], sims.indptr[r + 1]
        cols, vals = sims.indices[start:end], sims.data[start:end]
        scored = []
        for c in cols[np.argsort(-vals, kind="stable")[:3 * k + 1]]:
            if index.keys[c] == keys[r]:
                continue
            candidate = str(index.queries[c])
            forward, note = coverage(texts[r], candidate)
            backward, back_note = coverage(candidate, texts[r])
            cover, note = (forward, note) if forward >= backward else (backward, back_note)
            score = (float(sims[r, c]) + cover) / 2
            if score >= floor:
                scored.append((keys[r], index.keys[c], score, note))
        rows += sorted(scored, key=lambda row: -row[2])[:k]
    return pd.DataFrame(rows, columns=SCHEMA_COLUMNS)


def lexical_df(targets: DataFrame, index: LexicalIndex, k: int,
               floor: float) -> tuple[DataFrame, Shared[LexicalIndex]]:
    """`lexical_batch` over a Spark DataFrame of (query_key, query) in `mapInPandas`, with the
    index shipped once; the caller destroys the returned handle after the last action."""

    def run(local: LexicalIndex, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield lexical_batch(batch, local, k, floor)

    return map_batches_with(targets.select("query_key", "query"), index, run, SCHEMA)
