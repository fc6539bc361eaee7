"""The layout shows the architecture: packages import downwards only, with no cycles."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

LIB = Path(__file__).parents[1] / "lib" / "querylens"
STAGES = {"ingest", "embed", "cluster", "success", "recommend", "report"}


def package_imports() -> dict[str, set[str]]:
    """Top-level package -> the other querylens packages its modules import."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in LIB.rglob("*.py"):
        parts = path.relative_to(LIB).parts
        package = parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.startswith("querylens.") and name.split(".")[1] != package:
                    edges[package].add(name.split(".")[1])
    return edges


def test_packages_import_without_cycles() -> None:
    edges = package_imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, set()) - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    assert [p for p in edges if reaches(p, p, set())] == []


def test_nothing_imports_app_and_no_stage_imports_demo() -> None:
    edges = package_imports()
    assert [p for p, targets in edges.items() if "app" in targets] == []
    assert [p for p in STAGES if "demo" in edges.get(p, set())] == []
    assert edges["runtime"] == set()
    assert sorted(p.name for p in LIB.iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "app", "cluster", "demo", "deploy", "embed", "ingest", "recommend", "report", "runtime",
        "success", "tracking"]
