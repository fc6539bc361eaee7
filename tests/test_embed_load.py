"""Loading models: clear errors, never remote code, revisions, devices and precision."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from querylens.embed.encoders import (
    ModelLoadError,
    choose_device,
    load_encoder,
    model_revision,
    resolve_model_path,
    torch_dtype,
)
from tests.embed_helpers import save_tiny_clip

EVIL = "from pathlib import Path\nPath({marker!r}).write_text('remote code ran')\n"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip_load"))


def test_unknown_hub_id_names_the_model_and_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_encoder("acme/no-such-model", "cpu")
    message = str(info.value)
    assert "'acme/no-such-model'" in message
    assert str(tmp_path / "acme" / "no-such-model") in message
    assert "Hugging Face cache" in message and "hub" in message


def test_missing_local_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "fashion-clip"
    with pytest.raises(ModelLoadError, match=f"{missing} is not a folder"):
        resolve_model_path(str(missing))


def test_broken_folder_names_model_folder_and_class(tmp_path: Path, tiny_clip: Path) -> None:
    broken = shutil.copytree(tiny_clip, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=r"cannot load model .* from .*broken as a "
                                             r"ClipTextEncoder"):
        load_encoder(str(broken), "cpu")


def test_custom_model_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "evil_model.py").write_text(EVIL.format(marker=str(marker)))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil",
        "auto_map": {"AutoConfig": "evil_model.EvilConfig", "AutoModel": "evil_model.EvilModel"},
    }))
    with pytest.raises(ModelLoadError, match="remote code is never run"):
        load_encoder(str(folder), "cpu")
    assert not marker.exists()


def test_custom_tokenizer_code_in_a_clip_folder_is_never_run(
    tmp_path: Path, tiny_clip: Path
) -> None:
    marker = tmp_path / "ran.txt"
    folder = shutil.copytree(tiny_clip, tmp_path / "clip_with_code")
    (folder / "evil_tokenizer.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil_tokenizer.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    try:
        load_encoder(str(folder), "cpu")
    except ModelLoadError:
        pass
    assert not marker.exists()


def test_revision_tracks_weights_and_hub_snapshots(tmp_path: Path, tiny_clip: Path) -> None:
    other = save_tiny_clip(tmp_path / "other", seed=1)
    copy = shutil.copytree(tiny_clip, tmp_path / "moved" / "same_weights")
    revision = model_revision(str(tiny_clip))
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", revision)
    assert model_revision(str(copy)) == revision
    assert model_revision(str(other)) != revision
    config = copy / "config.json"
    config.write_text(config.read_text() + " ")
    assert model_revision(str(copy)) != revision
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = shutil.copytree(tiny_clip, tmp_path / "models--a--b" / "snapshots" / commit)
    assert model_revision(str(snapshot)) == commit


@pytest.mark.parametrize(("requested", "gpus", "cuda", "expected"), [
    ("auto", ["3"], True, "cuda:3"),
    ("auto", [], True, "cuda"),
    ("auto", [], False, "cpu"),
    ("cuda", ["1", "2"], True, "cuda:1"),
    ("cpu", ["0"], True, "cpu"),
    ("cuda:2", [], True, "cuda:2"),
])
def test_device_is_the_tasks_gpu_else_cuda_else_cpu(
    requested: str, gpus: list[str], cuda: bool, expected: str
) -> None:
    assert choose_device(requested, gpus, cuda) == expected


def test_cuda_requested_without_a_gpu_fails_clearly() -> None:
    with pytest.raises(ModelLoadError, match="embed.device is 'cuda'"):
        choose_device("cuda", [], False)


def test_half_precision_only_on_gpu() -> None:
    assert torch_dtype("auto", "cpu") == torch.float32
    assert torch_dtype("bfloat16", "cpu") == torch.float32
    assert torch_dtype("auto", "cuda:0") == torch.float16
    assert torch_dtype("bfloat16", "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="embed.dtype .* 'half'"):
        torch_dtype("half", "cuda")


def test_embed_config_is_validated_naming_the_key() -> None:
    from querylens.runtime.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="embed.fallback"):
        load_config(None, ["embed.model=minilm", "embed.fallback=minilm"])
    with pytest.raises(ConfigError, match="embed.dtype"):
        load_config(None, ["embed.dtype=half"])
    assert load_config(None, ["embed.dtype=bfloat16"]).embed.dtype == "bfloat16"


def test_empty_input_gives_an_empty_array(tiny_clip: Path) -> None:
    encoder = load_encoder(str(tiny_clip), "cpu")
    assert encoder.encode([]).shape == (0, 24)
    (encoded,) = list(encoder.encode_batches([[]]))
    assert encoded.vectors.shape == (0, 24) and encoded.truncated.shape == (0,)
