"""Fast, exact CLIP tokenization for short queries, and length-sorted dynamic padding.

CLIP's tokenizer normalises the text, splits it into words with one regular expression and runs
byte-level BPE on each word independently. Fashion queries reuse a small vocabulary of words, so
`WordCachedTokenizer` splits in Python and looks each word's ids up in a cache filled by the real
tokenizer's BPE model: the ids are the tokenizer's own, several times faster than calling it per
query. Printable ASCII text (most queries) is split on spaces and cached per space-free chunk;
anything else is normalised by the tokenizer's own normaliser and split with its own pattern;
text naming a special token goes through the tokenizer itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import regex

from querylens.embed.clip_tokenizer import bytes_to_unicode

WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_SPLITS = (r"<\|startoftext\|>|<\|endoftext\|>|" + WORDS, WORDS)
WHITESPACE = regex.compile(r"\s+")
BYTE_CHARS = bytes_to_unicode()


@dataclass(frozen=True)
class Tokens:
    """Token ids of a list of texts, flat: row i is `ids[starts[i] : starts[i] + lengths[i]]`.

    Rows are truncated to the model's context; `full_lengths` are the lengths before truncation.
    """

    ids: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    full_lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def truncated(self) -> np.ndarray:
        return self.full_lengths > self.lengths

    def padded(self, rows: np.ndarray, pad_id: int) -> np.ndarray:
        """Rows `rows` as a (len(rows), longest) int32 array right-padded with `pad_id`."""
        lengths = self.lengths[rows]
        width = int(lengths.max()) if len(rows) else 0
        out = np.full((len(rows), width), pad_id, dtype=np.int32)
        columns = np.arange(width)
        mask = columns < lengths[:, None]
        out[mask] = self.ids[(self.starts[rows][:, None] + columns)[mask]]
        return out


def from_rows(rows: list[list[int]], max_length: int, eos_id: int) -> Tokens:
    """`Tokens` from untruncated id lists that end with `eos_id`, truncated as HF truncates."""
    full = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    if (full > max_length).any():
        rows = [r if len(r) <= max_length else [*r[: max_length - 1], eos_id] for r in rows]
    lengths = np.minimum(full, max_length)
    starts = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    ids = np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
    return Tokens(ids, starts, lengths, full)


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (stable sort by length)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class HFTokenizer:
    """Any Hugging Face tokenizer that adds its own special tokens; truncation done here."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.eos_id = int(tokenizer.eos_token_id)

    def __call__(self, texts: list[str]) -> Tokens:
        rows = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return from_rows(rows, self.max_length, self.eos_id)


class WordCachedTokenizer:
    """CLIP's tokenizer with per-word id caching; ids identical to the wrapped tokenizer's."""

    def __init__(self, tokenizer: Any, max_length: int, max_cache: int = 1_000_000):
        self.backend = tokenizer.backend_tokenizer
        self.max_length = max_length
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self.split = regex.compile(split_pattern(tokenizer) or WORDS)
        self.words: dict[str, list[int]] = {}
        self.chunks: dict[str, list[int]] = {}
        self.max_cache = max_cache

    @staticmethod
    def supports(tokenizer: Any) -> bool:
        """True when `tokenizer` is CLIP's standard pipeline (the one this class reproduces)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            return False
        spec = json.loads(backend.to_str())
        normalizers = [n.get("type") for n in (spec.get("normalizer") or {}).get("normalizers", [])]
        pre = spec.get("pre_tokenizer") or {}
        pre_types = [p.get("type") for p in pre.get("pretokenizers", [])]
        post = (spec.get("post_processor") or {}).get("type")
        specials = {t["content"] for t in spec.get("added_tokens", [])}
        return (
            normalizers == ["NFC", "Replace", "Lowercase"]
            and pre_types == ["Split", "ByteLevel"]
            and split_pattern(tokenizer) in CLIP_SPLITS
            and post in ("RobertaProcessing", "TemplateProcessing")
            and specials <= {"<|startoftext|>", "<|endoftext|>"}
            and (spec.get("model") or {}).get("type") == "BPE"
        )

    def word_ids(self, word: str) -> list[int]:
        """BPE ids of one pre-tokenized word, straight from the tokenizer's model."""
        ids = self.words.get(word)
        if ids is None:
            mapped = "".join(BYTE_CHARS[b] for b in word.encode("utf-8"))
            ids = [token.id for token in self.backend.model.tokenize(mapped)]
            if len(self.words) < self.max_cache:
                self.words[word] = ids
        return ids

    def chunk_ids(self, chunk: str) -> list[int]:
        """Ids of a space-free, printable ASCII, lower-cased chunk such as `levi's`."""
        ids = self.chunks.get(chunk)
        if ids is None:
            ids = [i for word in self.split.findall(chunk) for i in self.word_ids(word)]
            if len(self.chunks) < self.max_cache:
                self.chunks[chunk] = ids
        return ids

    def __call__(self, texts: list[str]) -> Tokens:
        rows: list[list[int]] = []
        cached_chunk = self.chunks.get
        cached_word = self.words.get
        findall = self.split.findall
        normalize = self.backend.normalizer.normalize_str
        bos, eos = self.bos_id, self.eos_id
        for text in texts:
            if "<|" in text:
                rows.append(list(self.backend.encode(text, add_special_tokens=True).ids))
                continue
            row = [bos]
            if text.isascii() and text.isprintable():
                for chunk in text.lower().split():
                    ids = cached_chunk(chunk)
                    row += ids if ids is not None else self.chunk_ids(chunk)
            else:
                for word in findall(normalize(text)):
                    ids = cached_word(word)
                    row += ids if ids is not None else self.word_ids(word)
            row.append(eos)
            rows.append(row)
        return from_rows(rows, self.max_length, eos)


def split_pattern(tokenizer: Any) -> str | None:
    """The word-splitting regular expression of a tokenizer's first pre-tokenizer."""
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    first = (pre.get("pretokenizers") or [{}])[0]
    pattern = first.get("pattern", {}).get("Regex")
    return str(pattern) if pattern is not None else None


def fast_tokenizer(tokenizer: Any, max_length: int) -> WordCachedTokenizer | HFTokenizer:
    """The word-cached tokenizer where it is exact for `tokenizer`, else a plain wrapper."""
    if WordCachedTokenizer.supports(tokenizer):
        return WordCachedTokenizer(tokenizer, max_length)
    return HFTokenizer(tokenizer, max_length)
