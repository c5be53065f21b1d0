"""Active health checking: probe every host of a cluster, take failing ones out of balancing.

Envoy's `health_checks[0]`: every `interval`, each host gets an HTTP GET of `path` (healthy
if the status falls in the expected ranges, 200-399 unless configured) or a plain TCP
connect, bounded by `timeout`. After `unhealthy_threshold` failures in a row the host is
marked `hc_failed` and the balancer skips it as it skips an outlier ejection (panic
rules included); after `healthy_threshold` passes in a row it is back. Hosts start
healthy, so a config push never empties a cluster while its first checks run.

An HTTP check speaks to the endpoint as requests do: over TLS with the same client
context (workload certificate, trust bundle, expected peer names) when the endpoint's
compiled `tls` is set, so a check of a STRICT mTLS endpoint is not refused as plaintext,
and a server that is not who the cluster expects fails its check. A TCP check stays a
plain connect (no handshake), as its name says.

One task per cluster per worker owns the checks (`asyncio.TaskGroup`): a host whose check
is still running when the next round comes is skipped that round, so checks of one host
never overlap. The cluster manager starts the checker, keeps it across pushes while its
config is unchanged, and stops it. `observe` is the whole state machine, driven by the
probes here and directly by tests.
"""

from __future__ import annotations

import asyncio

from plait.codec.http1 import Http1ClientCodec, Response
from plait.dataplane.config import HealthCheck
from plait.dataplane.net import upstream_tls

USER_AGENT = b"plait-health-check"


class HealthChecker:
    def __init__(self, config: HealthCheck, cluster, *, on_event=None, probe=None,
                 sleep=asyncio.sleep) -> None:
        self.config = config
        self.cluster = cluster  # the current Cluster: its hosts, stats and balancer
        self.on_event = on_event  # (kind, cluster name, host key) -> None
        self.probe = probe or (http_probe if config.http_path else tcp_probe)
        self.sleep = sleep  # between rounds; tests pass their own
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def run(self) -> None:
        busy: set = set()
        async with asyncio.TaskGroup() as checks:
            while True:
                for host in self.cluster.hosts:
                    if host not in busy:
                        busy.add(host)
                        checks.create_task(self._check(host, busy))
                await self.sleep(self.config.interval)

    async def _check(self, host, busy: set) -> None:
        cfg = self.config
        try:
            ok = await asyncio.wait_for(
                self.probe(host.endpoint, cfg, self.cluster.name, self.cluster.tls),
                cfg.timeout)
        except Exception:  # refused, reset, timed out, garbage: all mean "not healthy"
            ok = False
        finally:
            busy.discard(host)
        self.observe(host, ok)

    def observe(self, host, ok: bool) -> None:
        """Account for one check of `host`; flip its health at the thresholds."""
        cfg = self.config
        stats = self.cluster.stats
        stats.hc_attempt += 1
        if ok:
            stats.hc_success += 1
            host.hc_failures = 0
            if host.hc_failed:
                host.hc_successes += 1
                if host.hc_successes >= cfg.healthy_threshold:
                    host.hc_failed = False
                    host.hc_successes = 0
                    stats.hc_returns += 1
                    self._changed(host, "hc_passed")
            return
        stats.hc_failure += 1
        host.hc_successes = 0
        host.hc_failures += 1
        if not host.hc_failed and host.hc_failures >= cfg.unhealthy_threshold:
            host.hc_failed = True
            stats.hc_ejections += 1
            self._changed(host, "hc_failed")

    def _changed(self, host, kind: str) -> None:
        self.cluster.rebuild_lb()
        if self.on_event is not None:
            self.on_event(kind, self.cluster.name, host.key)


async def tcp_probe(endpoint, cfg: HealthCheck, cluster_name: str, tls=None) -> bool:
    """Healthy if a TCP connection opens (plain, whatever the endpoint's TLS)."""
    _, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    writer.close()
    return True


async def http_probe(endpoint, cfg: HealthCheck, cluster_name: str, tls=None) -> bool:
    """Healthy if `GET path` answers with an expected status. `tls`: the worker's
    TlsStore, used when the endpoint has TLS. Raises on I/O and TLS errors (an
    UpstreamTlsError when there is no certificate or the peer is not accepted)."""
    host = (cfg.http_host or cluster_name).encode()
    head = (b"GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: %s\r\nconnection: close\r\n\r\n"
            % (cfg.http_path.encode(), host, USER_AGENT))
    reader, writer = await _open(endpoint, tls)
    try:
        writer.write(head)
        codec = Http1ClientCodec()
        while True:
            data = await reader.read(65536)
            events = codec.receive_data(data) if data else codec.receive_eof()
            for ev in events:
                if type(ev) is Response and ev.status >= 200:
                    return any(start <= ev.status < end for start, end in cfg.expected)
            if not data:
                return False
    finally:
        writer.close()


async def _open(endpoint, tls) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if endpoint.tls is None:
        return await asyncio.open_connection(endpoint.host, endpoint.port)
    if tls is None:
        raise upstream_tls.UpstreamTlsError("no workload certificate to present")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, protocol = await upstream_tls.connect(
        loop, lambda: asyncio.StreamReaderProtocol(reader), endpoint, tls)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
