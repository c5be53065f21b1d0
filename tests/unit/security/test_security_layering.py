"""`plait.security` is shared by both planes, so it may import neither (nor the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SECURITY = Path(__file__).resolve().parents[3] / "src" / "plait" / "security"


def imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(SECURITY.glob("*.py")), ids=lambda p: p.name)
def test_security_imports_no_plane(path: Path) -> None:
    bad = {m for m in imported(path)
           if m.startswith(("plait.controlplane", "plait.dataplane", "plait.cli", "plait.model"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_check_sees_the_package() -> None:
    assert len(list(SECURITY.glob("*.py"))) >= 8
