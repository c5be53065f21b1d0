"""The sidecar's xDS client: ADS, state of the world, over gRPC.

It runs in a thread of its own with grpcio's blocking API (a stream and a request queue),
so gRPC never shares the data plane's event loop; compiled snapshots are handed to the
loop with `call_soon_threadsafe`. Flow, as Envoy does it:

    subscribe LDS + CDS (wildcard) → each response is validated on its own →
    ACK (version, nonce) or NACK (last good version, nonce, error_detail) →
    listeners name route configs: subscribe RDS; EDS clusters name assignments: subscribe EDS →
    when every named resource has arrived, compile one snapshot and apply it atomically

"Arrived" means present in the latest response of its type, as Envoy warms a cluster
until its ClusterLoadAssignment comes: when a cluster is renamed, the endpoint response
already on its way answers the old names, and applying then would route to a cluster
without endpoints (503s) until the answer to the new subscription came. So a control
plane must send an assignment, empty if need be, for every EDS cluster (Plait's and
Istio's do); until it has, the sidecar serves its last complete config, and the admin
endpoint's `xds.waiting` names what is missing.

A NACKed response changes nothing: the sidecar keeps serving its last good config. The
stream reconnects with jittered exponential back-off, resubscribing from scratch.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from plait.core.errors import ConfigError
from plait.dataplane.compile import (
    HCM_NAME, compile_cluster, compile_endpoints, compile_listener, compile_route_table,
    compile_snapshot,
)
from plait.dataplane.config import Snapshot
from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, MESSAGE_TYPES, ROUTE

BACKOFF_BASE = 0.25  # seconds; doubles per failure up to BACKOFF_MAX, fully jittered
BACKOFF_MAX = 8.0
INVALID_ARGUMENT = 3  # google.rpc.Code


@dataclass
class XdsStatus:
    """What admin and stats show about the control-plane connection."""

    connected: bool = False
    connected_since: float = 0.0
    connects: int = 0
    disconnects: int = 0
    acks: dict[str, int] = field(default_factory=dict)
    nacks: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    last_nack: str = ""
    last_error: str = ""
    applied_version: str = ""
    waiting: str = ""  # what a newer config waits for before it is applied


class AdsClient:
    def __init__(self, *, target: str, node: base_pb2.Node, admin: tuple[str, int],
                 on_snapshot: Callable[[Snapshot, dict], None],
                 credentials: Callable[[], grpc.ChannelCredentials] | None = None) -> None:
        """`on_snapshot(snapshot, resources)` is called from the client thread with each
        complete, compiled snapshot and the raw resources it came from (for the cache).
        `credentials()`, when given, makes the TLS credentials of each new connection (so
        a renewed workload certificate is used from the next reconnect on)."""
        self.target = target
        self.credentials = credentials
        self.node = node
        self.admin = admin
        self.on_snapshot = on_snapshot
        self.status = XdsStatus()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xds", daemon=True)
        self._channel: grpc.Channel | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._channel is not None:
                self._channel.close()
        self._thread.join(timeout=5)

    # -- the stream -----------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._stream()
                failures = 0
            except grpc.RpcError as exc:
                self.status.last_error = f"{exc.code().name}: {exc.details()}"
            except ValueError as exc:  # channel closed under us at stop
                self.status.last_error = str(exc)
            except Exception as exc:  # a bug here must not end config updates for good
                self.status.last_error = f"{type(exc).__name__}: {exc}"
            if self.status.connected:
                self.status.connected = False
                self.status.disconnects += 1
            if self._stop.is_set():
                return
            failures += 1
            ceiling = min(BACKOFF_BASE * (1 << min(failures, 10)), BACKOFF_MAX)
            self._stop.wait(random.uniform(ceiling / 2, ceiling))

    def _stream(self) -> None:
        channel = (grpc.secure_channel(self.target, self.credentials())
                   if self.credentials is not None else grpc.insecure_channel(self.target))
        with self._lock:
            if self._stop.is_set():
                channel.close()
                return
            self._channel = channel
        requests: queue.Queue = queue.Queue()
        state = _StreamState()
        try:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            for type_url in (LISTENER, CLUSTER):
                requests.put(self._request(type_url, state, wildcard=True))
            responses = stub.StreamAggregatedResources(iter(requests.get, None))
            for response in responses:
                if not self.status.connected:
                    self.status.connected = True
                    self.status.connected_since = time.time()
                    self.status.connects += 1
                for request in self._on_response(response, state):
                    requests.put(request)
        finally:
            requests.put(None)
            with self._lock:
                self._channel = None
            channel.close()

    def _request(self, type_url: str, state: "_StreamState", *, wildcard: bool = False,
                 error: str = "") -> discovery_pb2.DiscoveryRequest:
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url, node=self.node,
            version_info=state.versions.get(type_url, ""),
            response_nonce=state.nonces.get(type_url, ""))
        if not wildcard:
            req.resource_names.extend(sorted(state.names.get(type_url, ())))
        if error:
            req.error_detail.CopyFrom(status_pb2.Status(code=INVALID_ARGUMENT, message=error))
        return req

    def _on_response(self, resp: discovery_pb2.DiscoveryResponse, state) -> list:
        type_url = resp.type_url
        short = type_url.rsplit(".", 1)[-1]
        state.nonces[type_url] = resp.nonce
        message_type = MESSAGE_TYPES.get(type_url)
        wildcard = type_url in (LISTENER, CLUSTER)
        if message_type is None:
            return [self._request(type_url, state, wildcard=wildcard,
                                  error=f"unsupported type {type_url}")]
        try:
            resources = {}
            for any_msg in resp.resources:
                msg = message_type()
                if not any_msg.Unpack(msg):
                    raise ConfigError("resources", f"not a {short}: {any_msg.type_url}")
                resources[_name(type_url, msg)] = msg
            validate(type_url, resources)
        except Exception as exc:  # ConfigError, or input the compiler did not foresee
            error = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            self.status.nacks[short] = self.status.nacks.get(short, 0) + 1
            self.status.last_nack = f"{short} {resp.version_info}: {error}"
            return [self._request(type_url, state, wildcard=wildcard, error=error)]
        state.resources[type_url] = resources
        state.versions[type_url] = resp.version_info
        self.status.versions[short] = resp.version_info
        self.status.acks[short] = self.status.acks.get(short, 0) + 1
        out = [self._request(type_url, state, wildcard=wildcard)]
        if type_url == LISTENER:
            out += self._resubscribe(ROUTE, _rds_names(resources.values()), state)
        elif type_url == CLUSTER:
            out += self._resubscribe(ENDPOINT, _eds_names(resources.values()), state)
        self._maybe_apply(state)
        return out

    def _resubscribe(self, type_url: str, names: frozenset, state) -> list:
        if names == state.names.get(type_url):
            return []
        state.names[type_url] = names
        return [self._request(type_url, state)]

    def _maybe_apply(self, state) -> None:
        got = state.resources
        if LISTENER not in got or CLUSTER not in got:
            return
        routes = got.get(ROUTE, {})
        assignments = got.get(ENDPOINT, {})
        missing = [f"RouteConfiguration {n}" for n in
                   sorted(state.names.get(ROUTE, frozenset()) - routes.keys())]
        missing += [f"ClusterLoadAssignment {n}" for n in
                    sorted(state.names.get(ENDPOINT, frozenset()) - assignments.keys())]
        if missing:
            self.status.waiting = ", ".join(missing)
            return
        self.status.waiting = ""
        versions = tuple(state.versions.get(t, "") for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT))
        version = "/".join(versions)
        try:
            snapshot = compile_snapshot(
                version=version, listeners=got[LISTENER].values(),
                clusters=got[CLUSTER].values(), routes=routes.values(),
                endpoints=assignments.values(), node_id=self.node.id,
                admin=self.admin)
        except Exception as exc:  # ConfigError, or input the compiler did not foresee
            self.status.last_nack = f"snapshot {version}: {exc}"
            return
        self.status.applied_version = version
        self.on_snapshot(snapshot, {t: list(r.values()) for t, r in got.items()})


class _StreamState:
    def __init__(self) -> None:
        self.resources: dict[str, dict] = {}
        self.versions: dict[str, str] = {}
        self.nonces: dict[str, str] = {}
        self.names: dict[str, frozenset] = {}


def _name(type_url: str, msg) -> str:
    return msg.cluster_name if type_url == ENDPOINT else msg.name


def _rds_names(listeners) -> frozenset:
    names = set()
    for lis in listeners:
        for chain in lis.filter_chains:
            for f in chain.filters:
                if f.name == HCM_NAME:
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        names.add(hcm.rds.route_config_name)
    return frozenset(names)


def _eds_names(clusters) -> frozenset:
    return frozenset(c.eds_cluster_config.service_name or c.name
                     for c in clusters if c.type == cluster_pb2.Cluster.EDS)


def validate(type_url: str, resources: dict) -> None:
    """Check one response's resources on their own. Raises ConfigError."""
    for name, msg in resources.items():
        path = f"{type_url.rsplit('.', 1)[-1]}[{name}]"
        if type_url == LISTENER:
            compile_listener(msg, None, path=path)
        elif type_url == ROUTE:
            compile_route_table(msg, path=path)
        elif type_url == CLUSTER:
            compile_cluster(msg, {}, path=path)
        else:
            compile_endpoints(msg, path)
