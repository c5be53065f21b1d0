"""The parts of the benchmarks that run inside their own process, run here on a few
requests each: they build the sidecar's objects by hand, so a change to those objects
can break a benchmark that no other test starts (bench/governance.py once failed that
way). What they measure is not looked at: only that they still run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module", autouse=True)
def bench_on_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


@pytest.mark.parametrize("scenario", ["none", "governance"])
def test_the_instruction_counts_request_path_forwards_and_answers(scenario):
    import instructions

    # request_path() checks that its first request reached the upstream and was answered
    instructions.drive(scenario, 20)


def test_the_governance_filter_timing_runs_the_filter_chain():
    import governance

    args = SimpleNamespace(per_try_timeout=None)
    assert governance.filter_cost_us("none", args) == 0.0  # no filters: nothing to time
    assert governance.filter_cost_us("governance", args) > 0.0


@pytest.mark.parametrize("scenario", ["catchall", "table50"])
def test_the_route_match_timing_routes_to_the_app(scenario):
    import routes

    assert routes.match_cost_us(scenario) > 0.0  # it asserts the route it matched
