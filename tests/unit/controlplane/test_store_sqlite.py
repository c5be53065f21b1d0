import asyncio
import sqlite3

import pytest

from plait.core.errors import PlaitError
from plait.controlplane.store import ConflictError, NotFoundError, SqliteStore
from plait.model import ResourceKey, parse_resource

KEY = ResourceKey("VirtualService", "default", "reviews")


def vs(weight_v1: int = 100, name: str = "reviews"):
    route = [{"destination": {"host": "reviews", "subset": "v1"}, "weight": weight_v1}]
    if weight_v1 < 100:
        route.append({"destination": {"host": "reviews", "subset": "v2"}, "weight": 100 - weight_v1})
    return parse_resource({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name}, "spec": {"hosts": ["reviews"], "http": [{"route": route}]},
    })


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1
        return self.t


@pytest.fixture
def store(tmp_path):
    s = SqliteStore.open(tmp_path, now=Clock())
    yield s
    s.close()


def run(coro):
    return asyncio.run(coro)


def test_versions_grow_per_resource_and_revision_globally(store):
    a = run(store.put(vs(100)))
    b = run(store.put(vs(100, name="ratings")))
    c = run(store.put(vs(90)))
    assert (a.record.version, b.record.version, c.record.version) == (1, 1, 2)
    assert (a.record.revision, b.record.revision, c.record.revision) == (1, 2, 3)
    assert store.revision == 3
    assert run(store.get(KEY)).resource == vs(90)


def test_unchanged_content_writes_no_version(store):
    run(store.put(vs(90)))
    again = run(store.put(vs(90)))
    assert not again.changed and again.record.version == 1 and store.revision == 1


def test_history_and_rollback(store):
    for w in (100, 90, 50):
        run(store.put(vs(w)))
    history = run(store.history(KEY))
    assert [(r.version, r.resource) for r in history] == [(1, vs(100)), (2, vs(90)), (3, vs(50))]
    assert history[0].updated_at < history[1].updated_at < history[2].updated_at
    back = run(store.rollback(KEY, 1))
    assert back.changed and back.record.version == 4
    assert run(store.get(KEY)).resource == vs(100)
    assert [r.version for r in run(store.history(KEY))] == [1, 2, 3, 4]


def test_rollback_to_missing_version(store):
    run(store.put(vs()))
    with pytest.raises(NotFoundError):
        run(store.rollback(KEY, 9))
    with pytest.raises(NotFoundError):
        run(store.rollback(ResourceKey("VirtualService", "default", "nope"), 1))


def test_delete_keeps_history_and_versions_continue(store):
    run(store.put(vs(90)))
    deleted = run(store.delete(KEY))
    assert deleted.deleted and deleted.version == 2
    with pytest.raises(NotFoundError):
        run(store.get(KEY))
    assert run(store.list("VirtualService")) == []
    with pytest.raises(NotFoundError):
        run(store.delete(KEY))
    with pytest.raises(ConflictError):
        run(store.rollback(KEY, 2))
    restored = run(store.rollback(KEY, 1))
    assert restored.record.version == 3 and run(store.get(KEY)).resource == vs(90)


def test_put_many_is_all_or_nothing(store, monkeypatch):
    run(store.put(vs(100)))
    real_insert = store._insert
    calls = []

    def failing_insert(key, resource):
        calls.append(key)
        if len(calls) == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real_insert(key, resource)

    monkeypatch.setattr(store, "_insert", failing_insert)
    with pytest.raises(sqlite3.OperationalError):
        run(store.put_many([vs(50), vs(100, name="ratings")]))
    monkeypatch.undo()
    assert run(store.get(KEY)).resource == vs(100) and store.revision == 1
    assert [r.key.name for r in run(store.list("VirtualService"))] == ["reviews"]
    assert len(run(store.history(KEY))) == 1


def test_survives_reopen(tmp_path):
    s = SqliteStore.open(tmp_path)
    run(s.put(vs(90)))
    run(s.put(vs(80)))
    run(s.put(vs(100, name="gone")))
    run(s.delete(ResourceKey("VirtualService", "default", "gone")))
    s.close()
    s = SqliteStore.open(tmp_path)
    try:
        assert s.revision == 4
        assert [r.key.name for r in s.current("VirtualService")] == ["reviews"]
        assert run(s.get(KEY)).version == 2 and run(s.get(KEY)).resource == vs(80)
        assert run(s.put(vs(70))).record.version == 3
    finally:
        s.close()


def test_one_process_per_data_dir(store, tmp_path):
    with pytest.raises(PlaitError, match="in use"):
        SqliteStore.open(tmp_path)


def test_subscribers_hear_changes_only(store):
    heard = []
    unsubscribe = store.subscribe(lambda: heard.append(store.revision))
    run(store.put(vs(90)))
    run(store.put(vs(90)))  # unchanged: no event
    run(store.delete(KEY))
    unsubscribe()
    run(store.put(vs(90)))
    assert heard == [1, 2]


def test_list_filters_by_namespace(store):
    other = vs().model_copy(update={"metadata": vs().metadata.model_copy(update={"namespace": "shop"})})
    run(store.put_many([vs(), other]))
    assert [r.key.namespace for r in run(store.list("VirtualService"))] == ["default", "shop"]
    assert [r.key.namespace for r in run(store.list("VirtualService", "shop"))] == ["shop"]
