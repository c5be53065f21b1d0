"""A registry with a lease table comes back after a restart as it was: same instances,
same lease ids, each with a fresh TTL; a dead instance still expires, one TTL later."""

from __future__ import annotations

import sqlite3

import pytest

from plait.controlplane.lease_table import LeaseTable
from plait.controlplane.mesh import Instance
from plait.controlplane.registry import Registry
from plait.controlplane.store import NotFoundError
from plait.testing.clock import FakeClock


def inst(port=9080, service="reviews", **labels):
    return Instance(service, "127.0.0.1", port, labels=labels)


@pytest.fixture
def tables(tmp_path):
    """Opens lease tables on one data directory (one per "process"); closes them all."""
    opened: list[LeaseTable] = []

    def open_table() -> LeaseTable:
        opened.append(LeaseTable.open(tmp_path))
        return opened[-1]

    yield open_table
    for table in opened:
        table.close()


def restart(tables, clock) -> Registry:
    """A new registry on the same data directory: what a restarted control plane builds."""
    return Registry(now=clock, table=tables())


def test_a_restarted_registry_has_the_same_instances_under_the_same_lease_ids(tables):
    before = Registry(now=FakeClock(), table=tables())
    a = before.register(inst(9080, version="v1"), ttl=30)
    b = before.register(Instance("ratings", "10.0.0.7", 7000, protocol="grpc",
                                 instance_id="ratings-a", healthy=False), ttl=5)
    clock = FakeClock(start=50.0)  # a new process: its monotonic clock owes nothing to the old
    after = restart(tables, clock)
    assert after.instances() == before.instances()
    assert {l.lease_id: l.ttl for l in after.leases()} == {a.lease_id: 30, b.lease_id: 5}
    assert [after.remaining(l) for l in after.leases()] == [5, 30]  # ratings, reviews
    assert after.write_failures == 0


def test_a_restored_lease_gets_one_full_ttl_and_a_heartbeat_keeps_it(tables):
    old_clock = FakeClock()
    before = Registry(now=old_clock, table=tables())
    lease = before.register(inst(), ttl=30)
    old_clock.advance(29)  # nearly expired when the control plane stops
    clock = FakeClock()
    after = restart(tables, clock)
    clock.advance(29.9)
    assert after.expire() == []
    after.heartbeat(lease.lease_id)
    clock.advance(29.9)
    assert after.expire() == []
    assert after.remaining(after.lease(lease.lease_id)) == pytest.approx(0.1)


def test_an_instance_that_never_heartbeats_again_expires_one_ttl_after_the_restart(tables):
    before = Registry(now=FakeClock(), table=tables())
    before.register(inst(9080), ttl=10)
    live = before.register(inst(9081), ttl=10)
    clock = FakeClock()
    after = restart(tables, clock)
    clock.advance(9)
    after.heartbeat(live.lease_id)
    clock.advance(1)
    assert [i.port for i in after.expire()] == [9080]
    # ... and it stays gone through the next restart.
    again = restart(tables, FakeClock())
    assert [i.port for i in again.instances()["reviews"]] == [9081]


def test_heartbeats_are_not_written_but_health_changes_are(tables, tmp_path):
    clock = FakeClock()
    before = Registry(now=clock, table=tables())
    lease = before.register(inst(), ttl=10)
    watcher = sqlite3.connect(tmp_path / "plait.db")
    try:
        # data_version moves whenever another connection commits to the file.
        def version() -> int:
            return watcher.execute("PRAGMA data_version").fetchone()[0]

        quiet = version()
        for _ in range(5):
            clock.advance(3)
            before.heartbeat(lease.lease_id)
            before.heartbeat(lease.lease_id, healthy=True)  # no change of health
        assert version() == quiet
        before.heartbeat(lease.lease_id, healthy=False)
        assert version() != quiet
    finally:
        watcher.close()
    after = restart(tables, FakeClock())
    assert [i.healthy for i in after.instances()["reviews"]] == [False]


def test_deregistered_and_replaced_leases_do_not_come_back(tables):
    before = Registry(now=FakeClock(), table=tables())
    gone = before.register(inst(9080), ttl=10)
    old = before.register(inst(9081, version="v1"), ttl=10)
    new = before.register(inst(9081, version="v2"), ttl=10)
    before.deregister(gone.lease_id)
    after = restart(tables, FakeClock())
    assert [(l.lease_id, l.instance.labels) for l in after.leases()] == [
        (new.lease_id, {"version": "v2"})]
    for lease_id in (gone.lease_id, old.lease_id):
        with pytest.raises(NotFoundError):
            after.heartbeat(lease_id)


def test_a_row_that_is_not_an_instance_is_dropped_with_a_warning(tables, tmp_path, capsys):
    before = Registry(now=FakeClock(), table=tables())
    good = before.register(inst(9080), ttl=10)
    bad = before.register(inst(9081), ttl=10)
    with sqlite3.connect(tmp_path / "plait.db") as db:
        db.execute("UPDATE leases SET instance = ? WHERE lease_id = ?",
                   ('{"service": "reviews", "port": "x"}', bad.lease_id))
    after = restart(tables, FakeClock())
    assert [l.lease_id for l in after.leases()] == [good.lease_id]
    assert f"stored lease {bad.lease_id}" in capsys.readouterr().err
    assert [l.lease_id for l in restart(tables, FakeClock()).leases()] == [good.lease_id]


def test_a_failed_write_is_reported_and_the_registry_carries_on(tables, capsys):
    table = tables()
    registry = Registry(now=FakeClock(), table=table)
    table.close()  # every write now fails
    lease = registry.register(inst(), ttl=10)
    registry.heartbeat(lease.lease_id, healthy=False)
    registry.deregister(lease.lease_id)
    assert registry.write_failures == 3
    assert "registry change not saved" in capsys.readouterr().err
    assert registry.instances() == {}
