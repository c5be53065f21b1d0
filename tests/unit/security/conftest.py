"""A mesh CA on a clock the test can move, for the identity and TLS tests."""

from __future__ import annotations

import datetime

import pytest

from plait.controlplane.ca import Authority

UTC = datetime.timezone.utc


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mesh_ca(tmp_path, clock) -> Authority:
    return Authority.open(tmp_path / "cp", trust_domain="cluster.local", now=clock)
