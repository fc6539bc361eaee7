"""Lexical candidates: spelling variants and near duplicates among the recommendable queries,
retrieved by character 3-gram TF-IDF cosine (sparse_dot_topn) and by spelling corrections of
unknown words, and scored by token edit distance (rapidfuzz)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sparse_dot_topn import sp_matmul_topn

from querylens.runtime.workers import Shared, map_batches_with

SCHEMA = "query_key string, rec_query_key string, lexical_similarity double, lexical_note string"
SCHEMA_COLUMNS = [part.strip().split(" ")[0] for part in SCHEMA.split(",")]
TOKEN = re.compile(r"[^\W_]+")
NOTE_SIMILARITY = 0.6
CORRECTION_SIMILARITY = 0.75
CORRECTION_MIN_LENGTH = 4
CORRECTIONS_PER_WORD = 10
CHUNK_PAIRS = 20_000
BATCH_CELLS = 1 << 26


@dataclass
class Tokenized:
    """Texts as padded id matrices (-1 pads) into `names`: `tokens` (each text's tokens) and
    `units` (its tokens, then each adjacent pair, named "new balance" and compared glued)."""

    names: np.ndarray
    glued: np.ndarray
    tokens: np.ndarray
    units: np.ndarray


@dataclass
class LexicalIndex:
    """Candidate queries as L2-normalised character 3-gram TF-IDF columns (`grams`: 3-grams x
    candidates) and their tokens; the tokens' units (words and glued pairs) as 3-gram columns
    too (`unit_grams`), with which candidates hold each (`holders`: units x candidates), to find
    the corrections of a misspelt word."""

    vectorizer: TfidfVectorizer
    grams: sparse.csr_matrix
    keys: np.ndarray
    queries: np.ndarray
    tokenized: Tokenized
    unit_grams: sparse.csr_matrix
    holders: sparse.csr_matrix
    words: frozenset[str]


def padded(rows: list[list[int]]) -> np.ndarray:
    """`rows` as one int matrix, padded with -1."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def tokenize(texts: Sequence[str]) -> Tokenized:
    """`Tokenized` of `texts` with one vocabulary of tokens and glued pairs."""
    vocab: dict[str, int] = {}
    tokens: list[list[int]] = []
    units: list[list[int]] = []
    for text in texts:
        words = TOKEN.findall(text)
        ids = [vocab.setdefault(w, len(vocab)) for w in words]
        pairs = [vocab.setdefault(f"{a} {b}", len(vocab))
                 for a, b in zip(words, words[1:], strict=False)]
        tokens.append(ids)
        units.append(ids + pairs)
    names = np.array(list(vocab), dtype=object)
    glued = np.array([n.replace(" ", "") for n in names], dtype=object)
    return Tokenized(names, glued, padded(tokens), padded(units))


def incidence(ids: np.ndarray, n_names: int) -> sparse.csr_matrix:
    """Texts x names: 1 where a row of the padded id matrix `ids` (-1 pads) holds the name."""
    rows, cols = np.nonzero(ids >= 0)
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, ids[rows, cols])),
                             shape=(ids.shape[0], n_names))


def build_lexical_index(keys: pd.Series, queries: pd.Series) -> LexicalIndex | None:
    """Fit the 3-gram vocabulary on the candidate queries; None without any candidate."""
    if len(queries) == 0:
        return None
    texts = queries.astype(str).tolist()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True,
                                 dtype=np.float32)
    grams = vectorizer.fit_transform(texts).T.tocsr()
    tokenized = tokenize(texts)
    holders = incidence(tokenized.units, len(tokenized.names)).T.tocsr()
    words = frozenset(tokenized.names[np.unique(tokenized.tokens[tokenized.tokens >= 0])])
    return LexicalIndex(vectorizer, grams, keys.to_numpy(), queries.to_numpy(), tokenized,
                        vectorizer.transform(tokenized.glued).T.tocsr(), holders, words)


def token_similarity(a: str, b: str) -> float:
    """1 - edit distance / longer length."""
    return float(Levenshtein.normalized_similarity(a, b))


def coverage(a: Tokenized, rows_a: np.ndarray, b: Tokenized,
             rows_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pair (text rows_a[i] of `a`, text rows_b[i] of `b`): how well b's units cover
    a's tokens (the mean over a's tokens of the best `token_similarity` to a token of b or two
    adjacent ones glued, "newbalance"), and per token that best similarity and b's unit id."""
    toks, units = a.tokens[rows_a], b.units[rows_b]
    valid = (toks[:, :, None] >= 0) & (units[:, None, :] >= 0)
    codes = toks[:, :, None] * len(b.names) + units[:, None, :]
    inverse, unique = pd.factorize(codes[valid])
    sims = process.cpdist(a.names[unique // len(b.names)], b.glued[unique % len(b.names)],
                          scorer=Levenshtein.normalized_similarity, dtype=np.float32)
    full = np.full(codes.shape, -1.0, dtype=np.float32)
    full[valid] = np.asarray(sims)[inverse]
    pick = full.argmax(axis=2)
    best = np.take_along_axis(full, pick[:, :, None], axis=2)[:, :, 0]
    present = toks >= 0
    score = np.where(present, np.maximum(best, 0), 0).sum(axis=1) / np.maximum(
        present.sum(axis=1), 1)
    return score, best, np.take_along_axis(units, pick, axis=1)


def note(tokens: np.ndarray, best: np.ndarray, match: np.ndarray, a: Tokenized,
         b: Tokenized) -> str:
    """The close non-identical matches of one pair ("gabanna~gabbana")."""
    return ", ".join(f"{a.names[t]}~{b.names[m]}" for t, s, m in zip(tokens, best, match,
                                                                      strict=True)
                     if t >= 0 and s >= NOTE_SIMILARITY and a.names[t] != b.names[m])


def unknown_words(mine: Tokenized, index: LexicalIndex) -> np.ndarray:
    """Per word of `mine` (and a last False for the -1 pad): whether it has at least
    `CORRECTION_MIN_LENGTH` characters and no candidate holds it, so it may be misspelt."""
    return np.array([len(w) >= CORRECTION_MIN_LENGTH and " " not in w and w not in index.words
                     for w in mine.names.astype(str)] + [False])


def corrections(mine: Tokenized, unknown: np.ndarray, index: LexicalIndex) -> sparse.csr_matrix:
    """Words x units of `index`: the similarity of each `unknown` word to the units at least
    `CORRECTION_SIMILARITY` like it ("guci" -> "gucci" 0.8, "newbalance" -> "new balance" 1.0),
    among its `CORRECTIONS_PER_WORD` nearest units by 3-gram cosine."""
    shape = (len(mine.names), len(index.tokenized.names))
    words = np.flatnonzero(unknown[:-1])
    if len(words) == 0:
        return sparse.csr_matrix(shape, dtype=np.float32)
    names = mine.names[words].astype(str)
    at, units, _ = nearest(index.vectorizer.transform(names), index.unit_grams,
                           CORRECTIONS_PER_WORD)
    sims = np.asarray(process.cpdist(names[at], index.tokenized.glued[units],
                                     scorer=Levenshtein.normalized_similarity, dtype=np.float32))
    keep = sims >= CORRECTION_SIMILARITY
    return sparse.csr_matrix((sims[keep], (words[at][keep], units[keep])), shape=shape)


def correction_candidates(mine: Tokenized, fixes: sparse.csr_matrix, index: LexicalIndex,
                          texts: sparse.csr_matrix,
                          m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and cosines of each text's `m` candidates nearest by 3-gram cosine (`texts`:
    its 3-gram rows) among those that hold one of the corrections `fixes` of its words."""
    holding = (incidence(mine.tokens, len(mine.names)) @ (fixes > 0).astype(np.float32)
               @ index.holders).tocsr()
    live = np.flatnonzero(np.diff(holding.indptr))
    allowed = (texts[live] @ index.grams).multiply(holding[live] > 0).tocsr()
    rows, cols, values = top_entries(allowed, m)
    return live[rows], cols, values


def correction_score(mine: Tokenized, unknown: np.ndarray, rows: np.ndarray,
                     best: np.ndarray) -> np.ndarray:
    """Per pair, the best similarity at which the candidate corrects an `unknown` word of the
    query (0 where it corrects none); `best` is the forward coverage's per word."""
    fixed = unknown[mine.tokens[rows]] & (best >= CORRECTION_SIMILARITY)
    return np.where(fixed, best, 0.0).max(axis=1, initial=0.0)


def nearest(texts: sparse.csr_matrix, grams: sparse.csr_matrix,
            m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and cosines of each 3-gram row of `texts`'s `m` nearest columns of `grams`
    with a positive cosine, by a product that keeps only each row's top m (sparse_dot_topn;
    which of equal cosines at the m-th place is kept is the library's choice)."""
    found = sp_matmul_topn(texts, grams, top_n=m, threshold=0.0).tocoo()
    return found.row.astype(np.int64), found.col.astype(np.int64), found.data


def first_per_row(rows: np.ndarray, m: int) -> np.ndarray:
    """Whether each entry is among the first `m` of its row, for entries grouped by `rows`
    (sorted)."""
    return np.arange(len(rows)) - np.searchsorted(rows, rows) < m


def top_entries(sims: sparse.csr_matrix, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and values of each row's `m` largest positive stored entries, ties by
    column."""
    found = sims.tocoo()
    positive = found.data > 0
    rows, cols, values = found.row[positive], found.col[positive], found.data[positive]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order].astype(np.int64), cols[order].astype(np.int64), values[order]
    keep = first_per_row(rows, m)
    return rows[keep], cols[keep], values[keep]


def lexical_batch(batch: pd.DataFrame, index: LexicalIndex, k: int,
                  floor: float) -> pd.DataFrame:
    """Per query of `batch` (query_key, query), its top 3k+1 candidates by 3-gram cosine and
    its top 3k+1 by cosine among those correcting a word no candidate holds (never the query
    itself), scored by the best of: the candidate's tokens covering the query's, the query's
    covering a shorter candidate's ("hugo bos sunglasses" -> "hugo boss"), and the correction's
    own similarity ("guci sneakers" -> "gucci belt" 0.8); the best k at or above `floor`, ties
    by cosine."""
    if batch.empty:
        return pd.DataFrame([], columns=SCHEMA_COLUMNS)
    texts = batch["query"].astype(str).tolist()
    keys = batch["query_key"].to_numpy()
    mine = tokenize(texts)
    unknown = unknown_words(mine, index)
    grams = index.vectorizer.transform(texts).tocsr()
    found = [nearest(grams, index.grams, 3 * k + 1), correction_candidates(
        mine, corrections(mine, unknown, index), index, grams, 3 * k + 1)]
    n = len(index.keys)
    pairs, first = np.unique(np.concatenate([r * n + c for r, c, _ in found]), return_index=True)
    rows, cols = pairs // n, pairs % n
    cosine = np.concatenate([v for _, _, v in found])[first]
    distinct = index.keys[cols] != keys[rows]
    rows, cols, cosine = rows[distinct], cols[distinct], cosine[distinct]
    theirs = index.tokenized
    parts = []
    for s in range(0, len(rows), CHUNK_PAIRS):
        r, c, cos = rows[s:s + CHUNK_PAIRS], cols[s:s + CHUNK_PAIRS], cosine[s:s + CHUNK_PAIRS]
        forward, f_best, f_match = coverage(mine, r, theirs, c)
        forward = np.maximum(forward, correction_score(mine, unknown, r, f_best))
        backward, b_best, b_match = coverage(theirs, c, mine, r)
        ahead = forward >= backward
        score = np.where(ahead, forward, backward)
        kept = np.flatnonzero(score >= floor)
        kept = kept[np.lexsort((c[kept], -cos[kept], -score[kept], r[kept]))]
        kept = kept[first_per_row(r[kept], k)]
        notes = [note(mine.tokens[r[i]], f_best[i], f_match[i], mine, theirs) if ahead[i]
                 else note(theirs.tokens[c[i]], b_best[i], b_match[i], theirs, mine)
                 for i in kept]
        parts.append(pd.DataFrame({"row": r[kept], "col": c[kept], "score": score[kept],
                                   "cosine": cos[kept], "note": notes}))
    if not parts:
        return pd.DataFrame([], columns=SCHEMA_COLUMNS)
    scored = pd.concat(parts).sort_values(["row", "score", "cosine", "col"],
                                          ascending=[True, False, False, True])
    best = scored.groupby("row", sort=False).head(k)
    return pd.DataFrame({"query_key": keys[best["row"].to_numpy()],
                         "rec_query_key": index.keys[best["col"].to_numpy()],
                         "lexical_similarity": best["score"].to_numpy(dtype=np.float64),
                         "lexical_note": best["note"].to_numpy()}, columns=SCHEMA_COLUMNS)


def lexical_df(targets: DataFrame, index: LexicalIndex, k: int,
               floor: float) -> tuple[DataFrame, Shared[LexicalIndex]]:
    """`lexical_batch` over a Spark DataFrame of (query_key, query) in `mapInPandas`, with the
    index shipped once, on slices of each Arrow batch of about `BATCH_CELLS` query x candidate
    cells (one query a slice beyond that many candidates; a query's candidates do not depend on
    the other queries of its batch); the caller destroys the returned handle after the last
    action."""

    def run(local: LexicalIndex, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        step = max(1, BATCH_CELLS // max(len(local.keys), 1))
        for batch in batches:
            for start in range(0, len(batch), step):
                yield lexical_batch(batch.iloc[start:start + step], local, k, floor)

    return map_batches_with(targets.select("query_key", "query"), index, run, SCHEMA)
