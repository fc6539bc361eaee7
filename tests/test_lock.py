"""The lock file: it pins, with hashes, everything pyproject asks for (the dev and tracking
extras too), the CPU torch build, and this environment is exactly the lock; `make` reinstalls
when the lock changes."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from querylens.deploy.submit import (
    LOCK,
    PIN,
    check_env_lock,
    lock_mismatches,
    locked_versions,
    normalize_name,
)
from querylens.runtime.errors import SubmitError

ROOT = Path(__file__).resolve().parents[1]


def lock_entries() -> dict[str, list[str]]:
    """name -> the `--hash=` values under its pin, read line by line from the lock."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in (ROOT / LOCK).read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = normalize_name(match[1])
            entries[current] = []
        elif current and line.strip().startswith("--hash=sha256:"):
            entries[current].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return entries


def wanted() -> list[Requirement]:
    """pyproject's dependencies, the dev and tracking extras and lock/requirements.in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = [line.split("#")[0].strip()
             for line in (ROOT / "lock" / "requirements.in").read_text().splitlines()]
    texts = [*project["dependencies"], *project["optional-dependencies"]["dev"],
             *project["optional-dependencies"]["tracking"], *filter(None, extra)]
    return [Requirement(text) for text in texts]


def test_every_requirement_is_pinned_within_its_range_with_hashes() -> None:
    pins = locked_versions(ROOT / LOCK)
    hashes = lock_entries()
    assert set(hashes) == set(pins) and len(pins) > 50
    for requirement in wanted():
        name = normalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCK}: run `make lock`"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{LOCK} pins {name}=={pins[name]}, outside {requirement}: run `make lock`")
    for name, found in hashes.items():
        assert found and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in found), name


def test_torch_is_the_cpu_build_named_in_lock_torch_cpu() -> None:
    lines = (ROOT / "lock" / "torch-cpu.txt").read_text().splitlines()
    (pin,) = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert str(pin.specifier) == "==" + locked_versions(ROOT / LOCK)["torch"]
    assert Version(locked_versions(ROOT / LOCK)["torch"]).local == "cpu"
    assert not [n for n in locked_versions(ROOT / LOCK) if n.startswith("nvidia-")]


def test_this_environment_is_the_lock() -> None:
    assert lock_mismatches(Path(sys.prefix), ROOT / LOCK) == []
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


def test_make_reinstalls_from_the_lock_when_it_changes(tmp_path: Path) -> None:
    """An install stamp newer than every input is up to date; the lock changing (make -W)
    reinstalls from it."""
    (tmp_path / ".installed").touch()

    def plan(*args: str) -> str:
        done = subprocess.run(["make", "-n", f"VENV={tmp_path}", *args, f"{tmp_path}/.installed"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "pip install" not in plan()
    recipe = plan("-W", str(LOCK))
    assert f"pip install --quiet --require-hashes -r {LOCK}" in recipe
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in recipe
    assert "pip check" in recipe


def test_spark_submit_refuses_to_pack_a_venv_that_is_not_the_lock(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    numpy = locked_versions(ROOT / LOCK)["numpy"]
    for dist in [f"numpy-{numpy}", "PyYAML-0.1", "not_locked-1.0", "querylens-0.1.0"]:
        (site / f"{dist}.dist-info").mkdir(parents=True)
    assert lock_mismatches(tmp_path / "venv", ROOT / LOCK) == [
        "not-locked 1.0 is not in the lock",
        f"pyyaml 0.1 installed, {locked_versions(ROOT / LOCK)['pyyaml']} locked"]
    with pytest.raises(SubmitError, match="pyyaml 0.1 installed"):
        check_env_lock(tmp_path / "venv", ROOT)
