"""FailureRateEjection through a real control plane and real sidecars: applied as an
operator would, it reaches the caller's sidecar, which ejects the instance failing every
other request (no run of errors for a DestinationRule's consecutive rule to catch), for
the DestinationRule's ejection time, and calls it again once that is over. Through the
CLI, the kind is stored, versioned and rolled back like every other.
"""

from __future__ import annotations

import pytest
import yaml

from plait.testing.control import cli_output, run_cli, start_control
from plait.testing.mesh import wait_until

pytestmark = pytest.mark.timeout(60)

PRICING = ["pricing-1", "pricing-2", "pricing-3"]


def failure_rate_ejection(**spec) -> str:
    return yaml.safe_dump({
        "apiVersion": "plait.io/v1alpha1", "kind": "FailureRateEjection",
        "metadata": {"name": "pricing", "namespace": "shop"},
        "spec": {"host": "pricing", **spec},
    })


# The DestinationRule decides how long an ejection lasts and how many may be out; its
# consecutive rule (3 in a row) stays on and never fires here.
DESTINATION_RULE = yaml.safe_dump({
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
    "metadata": {"name": "pricing", "namespace": "shop"},
    "spec": {"host": "pricing", "trafficPolicy": {"outlierDetection": {
        "consecutive5xxErrors": 3, "baseEjectionTime": "3s", "maxEjectionPercent": 50}}},
})


def outlier_counts(caller) -> tuple[float, float, float]:
    """(ejections, of which by the failure-rate rule, returns) in the caller's sidecar."""
    stats = caller.stats()
    return (stats.value("plait_outlier_ejections_total"),
            stats.value("plait_outlier_ejections_by_reason_total", reason="failure_rate"),
            stats.value("plait_outlier_returns_total"))


def test_the_kind_reaches_the_caller_which_ejects_the_outlier_and_takes_it_back(mesh):
    web = mesh.add_app("web")
    for instance in PRICING:
        mesh.add_app("pricing", instance=instance)
    mesh.wait_routable(web, "pricing", set(PRICING))
    address = {i: f"127.0.0.1:{mesh.apps[i].inbound_port}" for i in PRICING}
    before = web.config_dump()["version"]
    mesh.apply_api(DESTINATION_RULE + "---\n" + failure_rate_ejection(
        minRequests=10, ratio=2, floorPercent=20, window="2s", minHosts=2))
    wait_until(lambda: web.config_dump()["version"] != before, timeout=5,
               what="web's sidecar takes the rules")

    mesh.apps["pricing-2"].upstream.fail(500, every=2)
    seen: list = []

    def a_round_then_ejected() -> bool:
        seen.extend(web.served_by("pricing", 3).elements())
        return outlier_counts(web)[0] > 0

    try:
        wait_until(a_round_then_ejected, timeout=15, what="web ejects pricing-2")
        assert outlier_counts(web) == (1, 1, 0), "by the failure-rate rule, and only once"
        assert set(seen) == {*PRICING, "<500>"}, seen  # pricing-2 also answered, in between
        assert web.endpoint_health("pricing") == {address["pricing-1"]: "healthy",
                                  address["pricing-2"]: "ejected",
                                  address["pricing-3"]: "healthy"}
        out = web.served_by("pricing", 30)
        assert outlier_counts(web)[2] == 0, "pricing-2 came back before the calls ended"
    finally:
        mesh.apps["pricing-2"].upstream.fail(0)
    assert out.keys() == {"pricing-1", "pricing-3"}, out
    assert abs(out["pricing-1"] - 15) <= 1, out  # round robin over the two left

    # Healed, it is back once the DestinationRule's 3 s are up.
    wait_until(lambda: web.call("pricing").served_by == "pricing-2", timeout=15,
               what="web calls pricing-2 again")
    assert outlier_counts(web) == (1, 1, 1)
    assert set(web.endpoint_health("pricing").values()) == {"healthy"}


def test_the_kind_through_the_cli(tmp_path):
    control = start_control(tmp_path / "control")
    try:
        def cli(*args: str, stdin: str | None = None) -> str:
            return cli_output(control, *args, stdin=stdin)

        assert cli("apply", "-f", "-", stdin=failure_rate_ejection()).strip() == (
            "FailureRateEjection shop/pricing configured (version 1)")
        row = cli("get", "fre", "-n", "shop").splitlines()[1].split()
        assert row[:4] == ["shop", "pricing", "pricing", "1"]
        assert "(version 2)" in cli("apply", "-f", "-",
                                    stdin=failure_rate_ejection(ratio=3, window="1m"))
        history = cli("history", "failurerateejection", "pricing", "-n", "shop").splitlines()
        assert [line.split()[0] for line in history[1:]] == ["1", "2"]
        assert "now version 3" in cli("rollback", "fre", "pricing", "-n", "shop", "--to", "1")
        current = yaml.safe_load(cli("get", "fre", "pricing", "-n", "shop", "-o", "yaml"))
        assert current["spec"] == {"host": "pricing"}  # the defaults, as first applied
        refused = run_cli(control, "apply", "-f", "-", stdin=failure_rate_ejection(ratio=0.5))
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "error: spec.ratio: Input should be greater than or equal to 1 (document 1)")
        assert "deleted" in cli("delete", "fre", "pricing", "-n", "shop")
    finally:
        control.stop()
