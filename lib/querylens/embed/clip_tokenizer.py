"""CLIP's real BPE tokenizer, built offline from the vocabulary inside the open_clip_torch wheel.

The hub is out of reach, but the open_clip_torch wheel carries `bpe_simple_vocab_16e6.txt.gz`.
`write_clip_tokenizer` turns it into the `vocab.json` + `merges.txt` that
`CLIPTokenizer.from_pretrained` loads, the way OpenAI's CLIP builds its vocabulary: the 256 byte
characters, the same with `</w>`, the merged pairs, then the two special tokens.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
WHEEL_MEMBER = f"open_clip/{BPE_NAME}"
N_MERGES = 49152 - 256 - 2
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
DEFAULT_CACHE = Path("work") / "clip_tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def read_merges(bpe_path: Path) -> list[tuple[str, str]]:
    """The merge pairs CLIP uses (the first line of the file is a header)."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    pairs = [tuple(line.split()) for line in lines]
    return [(a, b) for a, b in pairs]


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id exactly as CLIP's SimpleTokenizer numbers them (49408 tokens)."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(pair) for pair in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def write_clip_tokenizer(folder: Path, bpe_path: Path, max_length: int = 77) -> Path:
    """Write a `CLIPTokenizer.from_pretrained`-loadable tokenizer built from `bpe_path`."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = read_merges(bpe_path)
    (folder / "vocab.json").write_text(json.dumps(clip_vocab(merges), ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder


def fetch_clip_bpe(cache_dir: Path) -> Path:
    """`bpe_simple_vocab_16e6.txt.gz`, taken from the open_clip_torch wheel (never installed)."""
    target = cache_dir / BPE_NAME
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "-d", tmp, "open_clip_torch"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("open_clip_torch-*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(
                f"cannot fetch the CLIP BPE vocabulary: `{' '.join(command)}` failed "
                f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            target.write_bytes(wheel.read(WHEEL_MEMBER))
    return target


def clip_tokenizer_folder(cache_dir: Path | None = None) -> Path:
    """A folder holding CLIP's real tokenizer, built once under `cache_dir` (built aside and
    renamed into place, so concurrent test workers never read a half-written one).

    `cache_dir` defaults to `$QUERYLENS_CLIP_TOKENIZER` or `work/clip_tokenizer`.
    """
    folder = cache_dir or Path(os.environ.get("QUERYLENS_CLIP_TOKENIZER", DEFAULT_CACHE))
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    write_clip_tokenizer(staging, fetch_clip_bpe(staging))
    try:
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging)
    return folder
