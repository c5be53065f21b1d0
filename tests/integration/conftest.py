"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest

from plait.testing.mesh import Mesh


@pytest.fixture
def mesh(tmp_path):
    """A fresh mesh (control plane, then apps as a test adds them) for one test; modules
    that share one mesh across their tests define their own `mesh` fixture."""
    mesh = Mesh(tmp_path / "mesh")
    try:
        yield mesh
    finally:
        mesh.close()
