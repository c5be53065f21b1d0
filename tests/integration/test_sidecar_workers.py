"""`--concurrency 2`: two worker processes share the listener (SO_REUSEPORT), both serve,
and the admin endpoint's stats are the sum over both."""

from __future__ import annotations

import os

import pytest

from plait.testing import sidecar as sc
from plait.testing.wire import Conn

pytestmark = pytest.mark.timeout(60)
REQUESTS = 120


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connected_to(port: int) -> set[str]:
    """Inodes of established loopback TCP sockets whose remote port is `port`."""
    out = set()
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                out.add(inode)
    return out


def test_two_workers_serve_and_stats_add_up():
    with sc.upstreams("a") as ups, \
            sc.start_sidecar(sc.simple([ups["a"].port]), concurrency=2) as proxy:
        assert proxy.workers == 2
        [worker] = children(proxy.pid)  # the main process is worker 0 and forks one more
        for i in range(REQUESTS):  # a new connection each: the kernel spreads them
            with Conn(proxy.listener()) as c:
                c.request("GET", f"/echo/{i}", headers={"Connection": "close"})
                assert c.reply().status == 200
        # Each process keeps its own upstream pool: both hold a connection to the upstream.
        upstream_sockets = connected_to(ups["a"].port)
        assert socket_inodes(proxy.pid) & upstream_sockets
        assert socket_inodes(worker) & upstream_sockets
        stats = proxy.stats()
        assert stats.value("plait_downstream_rq_total") == REQUESTS
        assert stats.value("plait_downstream_cx_total") == REQUESTS
        assert stats.value("plait_upstream_rq_total", cluster="app", code="200") == REQUESTS
        assert ups["a"].count()["requests"] == REQUESTS
        assert proxy.stop() == 0
    assert not alive(worker)  # the worker went with the main process


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
