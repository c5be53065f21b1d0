"""Imports point down only (docs/architecture.md, "Layering").

Checked on the source text with `ast`, so a violation anywhere in a module — even inside a
function — fails, not only what happens to be imported at module load.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "plait"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("codec"), ids=lambda p: p.name)
def test_codec_is_sans_io(path: Path) -> None:
    banned = {"socket", "asyncio", "time", "uvloop", "selectors", "threading"}
    bad = {m for m in imports_of(path) if m.split(".")[0] in banned or m.startswith("plait.dataplane")}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("dataplane"), ids=lambda p: str(p.relative_to(SRC)))
def test_dataplane_never_imports_control_plane(path: Path) -> None:
    bad = {m for m in imports_of(path)
           if m.startswith(("plait.controlplane", "plait.model", "plait.cli"))}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("controlplane"), ids=lambda p: str(p.relative_to(SRC)))
def test_control_plane_never_imports_dataplane(path: Path) -> None:
    bad = {m for m in imports_of(path) if m.startswith(("plait.dataplane", "plait.cli"))}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_has_no_io(path: Path) -> None:
    bad = {m for m in imports_of(path)
           if m.split(".")[0] in {"socket", "asyncio"} or (m.startswith("plait.")
                                                           and not m.startswith("plait.core"))}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_the_check_sees_imports() -> None:
    # Guards the checker itself: a module that plainly imports asyncio must be seen to.
    assert "asyncio" in imports_of(SRC / "dataplane" / "worker.py")
