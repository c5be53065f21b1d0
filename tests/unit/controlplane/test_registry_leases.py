import asyncio

import pytest

from plait.controlplane.mesh import Instance
from plait.controlplane.registry import Registry
from plait.controlplane.store import NotFoundError


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(clock):
    return Registry(now=clock)


def inst(port=9080, **labels):
    return Instance("reviews", "127.0.0.1", port, labels=labels)


def test_register_assigns_instance_id_and_lists(registry):
    lease = registry.register(inst(version="v1"), ttl=5)
    assert lease.instance.instance_id == "reviews-127.0.0.1:9080"
    assert registry.instances() == {"reviews": [lease.instance]}


def test_lease_expires_without_heartbeat(registry, clock):
    registry.register(inst(), ttl=5)
    clock.t += 4.9
    assert registry.expire() == []
    clock.t += 0.2
    assert [i.port for i in registry.expire()] == [9080]
    assert registry.instances() == {}


def test_heartbeat_renews(registry, clock):
    lease = registry.register(inst(), ttl=5)
    for _ in range(4):
        clock.t += 4
        registry.heartbeat(lease.lease_id)
        registry.expire()
    assert registry.remaining(lease) == 5
    assert len(registry.instances()["reviews"]) == 1


def test_heartbeat_after_expiry_is_not_found(registry, clock):
    lease = registry.register(inst(), ttl=5)
    clock.t += 5
    with pytest.raises(NotFoundError):
        registry.heartbeat(lease.lease_id)


def test_deregister(registry):
    lease = registry.register(inst(), ttl=5)
    assert registry.deregister(lease.lease_id).port == 9080
    assert registry.instances() == {}
    with pytest.raises(NotFoundError):
        registry.deregister(lease.lease_id)


def test_reregistering_replaces_the_old_lease(registry):
    old = registry.register(inst(version="v1"), ttl=5)
    new = registry.register(inst(version="v2"), ttl=5)
    assert old.lease_id != new.lease_id
    assert [i.labels for i in registry.instances()["reviews"]] == [{"version": "v2"}]
    with pytest.raises(NotFoundError):
        registry.heartbeat(old.lease_id)


def test_bad_ttl(registry):
    with pytest.raises(ValueError):
        registry.register(inst(), ttl=0)


def test_subscribers_hear_register_expiry_and_deregister(registry, clock):
    heard = []
    unsubscribe = registry.subscribe(lambda: heard.append(sum(map(len, registry.instances().values()))))
    a = registry.register(inst(9080), ttl=5)
    registry.register(inst(9081), ttl=1)
    registry.heartbeat(a.lease_id)  # a renewal is not a change
    clock.t += 2
    registry.expire()
    registry.deregister(a.lease_id)
    unsubscribe()
    registry.register(inst(9082), ttl=5)
    assert heard == [1, 2, 1, 0]


def test_broken_subscriber_does_not_break_registration(registry, capsys):
    registry.subscribe(lambda: 1 / 0)
    registry.register(inst(), ttl=5)
    assert registry.instances()
    assert "subscriber failed" in capsys.readouterr().err


def test_run_expires_in_the_background(clock):
    registry = Registry(now=clock, check_interval=0.001)
    registry.register(inst(), ttl=5)
    clock.t += 10

    async def main():
        gone = asyncio.Event()
        registry.subscribe(gone.set)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(registry.run())
            await asyncio.wait_for(gone.wait(), timeout=5)
            task.cancel()

    asyncio.run(main())
    assert registry.instances() == {}
