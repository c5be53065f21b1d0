"""A stand-in cluster for unit tests of the outlier detector.

Why: the detector reads only a cluster's name, hosts and stats, and calls `rebuild_lb()`
after an ejection or a return, so its rules can be tested on plain `Host` objects without
a cluster manager, pools or sockets.

How: `FakeCluster(n)` holds n hosts on 127.0.0.1, ports 9000 upward, and fresh
`ClusterStats`; `rebuild_lb()` does nothing.
"""

from __future__ import annotations

from plait.dataplane.config import Endpoint
from plait.dataplane.stats import ClusterStats
from plait.dataplane.upstream.connection import Host


class FakeCluster:
    def __init__(self, n: int, name: str = "c") -> None:
        self.name = name
        self.hosts = [Host(Endpoint("127.0.0.1", 9000 + i)) for i in range(n)]
        self.stats = ClusterStats(name)

    def rebuild_lb(self) -> None:
        pass
