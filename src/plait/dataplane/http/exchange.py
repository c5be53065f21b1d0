"""One request's journey through the router: route, balance, pool, forward, retry.

An `Exchange` is created for each request head a downstream connection parses and lives
until the response is complete (or the sidecar answers itself). It is a callback-driven
state machine rather than a coroutine, because a task per request costs more than the
whole of the work here. The flow, in order:

    start → route → cluster → attempt → (pooled connection | connect) → attach → send
      upstream response head → retry? (5xx, per `retry_on`) → stream to downstream → finish

Failures become a `Reason`, turned into a status at one edge (`local_reply`). A request
is retried only while its response has not started and its body, if any, is still held
in the retry buffer (`RetryPolicy.buffer_limit`).
"""

from __future__ import annotations

import random
import time

from plait.codec.http1 import (
    EndOfMessage, Response, encode_chunk, encode_last_chunk, encode_request_head,
    encode_response_head,
)
from plait.core.errors import Reason
from plait.dataplane.http import mirror
from plait.dataplane.http.caller import NAMES as CALLER_NAMES
from plait.dataplane.http.local_reply import direct_response, local_response
from plait.dataplane.router import headers_match
from plait.dataplane.upstream.pool_limits import OVERFLOW

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"

# Which `retry_on` conditions cover each kind of failure (Envoy's semantics).
_COVERS = {
    "connect-failure": frozenset(("connect-failure", "5xx", "gateway-error", "reset")),
    "reset": frozenset(("reset", "5xx")),
    "timeout": frozenset(("5xx", "gateway-error", "reset")),
}
_GATEWAY = frozenset((502, 503, 504))
_MIRROR_BUFFER = 64 * 1024  # body held for a mirror on a route without retries: as a retry's


def _regex_rewrite(rewrite, target: bytes) -> bytes:
    """Envoy's regex_rewrite: substitute in the path, keep the query string."""
    pattern, substitution = rewrite
    path, sep, query = target.partition(b"?")
    return pattern.sub(substitution, path) + sep + query  # \1 refers to a group, as in RE2


class Exchange:
    __slots__ = (
        "down", "mgr", "request", "route", "cluster", "host", "upstream", "head", "body",
        "body_size", "retriable", "request_done", "response_started",
        "response_done", "down_chunked", "code", "reason", "attempts", "retries", "timer",
        "try_timer", "retry_handle", "reused", "finished", "upgraded", "t_start",
        "t_request_end", "t_connect", "t_connected", "t_first_byte", "bytes_sent",
        "upstream_keep_alive", "upstream_key", "compiled", "filter_index", "mirrors",
        "retry_held", "filter_state", "tried",
    )

    def __init__(self, down, request) -> None:
        self.down = down
        self.mgr = down.mgr
        self.request = request
        self.route = None
        self.cluster = None
        self.host = None
        self.upstream = None
        self.head = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.retriable = True  # the whole body so far is held for a retry
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.down_chunked = False
        self.code = 0
        self.reason: Reason | None = None
        self.attempts = 0
        self.retries = 0
        self.timer = None  # the route timeout's slot in mgr.deadlines (a set), if any
        self.try_timer = None
        self.retry_handle = None
        self.reused = False
        self.finished = False
        self.upgraded = False
        self.t_start = time.monotonic()
        if self.mgr.access_log is not None:  # the timings only the access log reads
            self.t_request_end = self.t_connect = self.t_connected = self.t_first_byte = 0.0
        self.bytes_sent = 0
        self.upstream_keep_alive = True
        self.upstream_key = ""
        self.compiled = None
        self.filter_index = 0
        self.mirrors = ()
        self.retry_held = False  # a retry of this request counts against max_retries
        self.filter_state = None  # what filters keep for on_complete (plait.dataplane.filters)
        self.tried = None  # hosts (keys) of earlier attempts, for previous_hosts retries

    # -- request side -------------------------------------------------------------------

    def start(self) -> None:
        mgr = self.mgr
        router = mgr.router
        compiled = router.route(self.request) if router else None
        if compiled is None:
            return self.local_reply(Reason.NO_ROUTE)
        self.route = compiled.route
        self.compiled = compiled
        if mgr.filters:
            self.filter_index = 0
            return self.resume()
        self.forward()

    def resume(self) -> None:
        """Run the rest of the filter chain, then the router if every filter continued.
        A filter that stopped the request (a fault delay) calls this to go on, later or
        even before it returns STOP.

        While the chain is walked, `filter_index` is -1: a call from the filter being run
        only marks the request resumed (-2), and the walk goes on once that filter has
        returned. When a filter stops, `filter_index` becomes the position after it, where
        a later call goes on from; being looked up only then, the position costs the walk
        nothing per filter."""
        if self.filter_index:
            i = self.filter_index
            if i < 0:  # from inside the walk below
                self.filter_index = -2
                return
            chain = self.mgr.filters[i:]
        else:
            chain = self.mgr.filters
        self.filter_index = -1
        for f in chain:
            if not f.on_request(self):
                if self.filter_index != -2:  # it answered, or will resume later
                    self.filter_index = self.mgr.filters.index(f) + 1
                    return
                self.filter_index = -1
        self.forward()

    def headers_match(self, conditions) -> bool:
        return headers_match(conditions, self.request)

    def forward(self) -> None:
        """The router: pick the cluster, prepare the upstream request, start the first try."""
        mgr = self.mgr
        req = self.request
        route = self.route
        if route.direct_status:
            return self.direct_reply(route.direct_status, route.direct_body)
        if route.redirect is not None:
            return self.redirect_reply(route.redirect)
        compiled = self.compiled  # a weighted pick only when the route splits traffic
        name = compiled.pick_cluster() if compiled.total else route.cluster
        cluster = self.cluster = mgr.clusters.clusters.get(name)  # ClusterManager.get
        if cluster is None:
            return self.local_reply(Reason.NO_CLUSTER)
        cluster.stats.rq_active += 1
        cluster.budget.requests += 1
        if cluster.stats.rq_active > cluster.max_requests:  # Envoy's max_requests breaker
            cluster.stats.rq_pending_overflow += 1
            return self.local_reply(Reason.OVERFLOW)
        target = req.target
        if route.prefix_rewrite is not None:
            target = route.prefix_rewrite.encode() + target[len(route.path):]
        elif route.regex_rewrite is not None:
            target = _regex_rewrite(route.regex_rewrite, target)
        headers = req.headers
        if route.host_rewrite is not None:
            headers = [(n, v) for n, v in headers if n != b"host"]
            headers.append((b"host", route.host_rewrite.encode()))
        elif not req.host:
            headers = headers + [(b"host", cluster.name.encode())]
        caller = mgr.caller_headers
        if caller:  # outbound: say who calls, whatever the app claimed
            headers = [h for h in headers if h[0] not in CALLER_NAMES]
            headers.extend(caller)
        if route.request_headers is not None:
            headers = route.request_headers.apply(headers)
        framing = _CHUNKED if req.chunked else b""
        if req.upgrade is not None:
            framing += b"connection: upgrade\r\nupgrade: %s\r\n" % req.upgrade
        self.head = encode_request_head(req.method, target, headers, framing)
        if route.mirrors:
            self.mirrors = mirror.choose(route.mirrors)
            # Copy now when there is no body, or when all of it came in while a filter held
            # the request (a fault delay); otherwise once it has ended (on_request_end).
            if self.mirrors and self.request_done and self.body_size > self._buffer_limit():
                self.mgr.stats.count("mirror_skipped_body_too_large_total")
                self.mirrors = ()
            elif self.mirrors and (not req.has_body or self.request_done):
                self._mirror()
        if req.expect_continue:
            self.down.send(_CONTINUE)
        self.attempt()  # the request goes out first (at sparse load), its timeout after
        if route.timeout > 0 and not self.finished:
            self.timer = mgr.deadlines.add(self, self.t_start + route.timeout)

    def _mirror(self) -> None:
        """Copy the request to the chosen shadow clusters; their answers are dropped."""
        body = b"".join(self.body) if self.request.has_body else b""
        for cluster_name in self.mirrors:
            cluster = self.mgr.clusters.get(cluster_name)
            if cluster is not None:
                mirror.send(cluster, self.head, body)
        self.mirrors = ()

    def on_request_data(self, data: bytes) -> None:
        self.body_size += len(data)
        wire = encode_chunk(data) if self.request.chunked and not self.upgraded else data
        conn = self.upstream
        if conn is not None:
            self.mgr.flusher.send(conn, wire)
            if self.retriable:
                if self.body_size > self._buffer_limit():
                    self.retriable = False
                    self.body = []
                else:
                    self.body.append(wire)
        else:
            self.body.append(wire)
            if self.body_size > 1 << 20:
                self.down.pause_reading()  # hold at most ~1 MiB while connecting

    def on_request_end(self, trailers) -> None:
        self.request_done = True
        if self.mirrors:
            if self.retriable and self.request.chunked:
                self.body.append(encode_last_chunk(trailers))
                self._mirror()
                self.body.pop()
            elif self.retriable:
                self._mirror()
            else:
                self.mgr.stats.count("mirror_skipped_body_too_large_total")
                self.mirrors = ()
        if self.mgr.access_log is not None:
            self.t_request_end = time.monotonic()
        if self.request.chunked:
            last = encode_last_chunk(trailers)
            if self.upstream is not None:
                self.mgr.flusher.send(self.upstream, last)
                if self.retriable:
                    self.body.append(last)
            else:
                self.body.append(last)

    def _buffer_limit(self) -> int:
        """How much request body to hold: for a retry, or for a mirror still to be sent
        (which copies the whole body once it has ended)."""
        policy = self.route.retry if self.route is not None else None
        if policy is not None:
            return policy.buffer_limit
        return _MIRROR_BUFFER if self.mirrors else 0

    # -- attempts -----------------------------------------------------------------------

    def attempt(self) -> None:
        self.attempts += 1
        route = self.route
        key = self._hash_key() if route.hash_policies else None
        host = self.cluster.lb.pick(key)
        if self.tried is not None and host is not None and host.key in self.tried:
            host = self._other_host(host, key)
        if host is None:
            return self.fail(Reason.NO_HEALTHY_UPSTREAM)
        self.host = host
        self.upstream_key = host.key
        host.active += 1
        host.rq_total += 1
        policy = route.retry
        if policy is not None and policy.per_try_timeout > 0:
            self.try_timer = self.mgr.loop.call_later(policy.per_try_timeout, self.on_try_timeout)
        idle = host.idle  # host.take_idle(), without the call while the last is open
        conn = idle.pop() if idle else None
        if conn is not None and conn.closed:
            conn = host.take_idle()
        if conn is not None:
            self.attach(conn, reused=True)
        else:
            if self.mgr.access_log is not None:
                self.t_connect = time.monotonic()
            n = self.attempts
            self.cluster.connect(host, lambda conn, exc: self.on_connected(conn, exc, n),
                                 alive=lambda: not self.finished and self.attempts == n)

    def _other_host(self, host, key):
        """Envoy's previous_hosts retry predicate: pick again, up to the policy's
        `host_selection_retry_max_attempts` times, while the pick is a host an earlier
        attempt of this request used. If every pick was, the last one stands."""
        lb = self.cluster.lb
        for _ in range(self.route.retry.host_selection_attempts):
            again = lb.pick(key)
            if again is None:
                break
            host = again
            if host.key not in self.tried:
                break
        return host

    def on_connected(self, conn, exc, attempt: int) -> None:
        if self.finished or attempt != self.attempts or self.upstream is not None:
            if conn is not None:  # this attempt was given up meanwhile: pool the connection
                conn.host.release(conn)
            return
        if exc is not None:
            if exc is OVERFLOW:  # the pending queue is full: no retry (as in Envoy)
                self._end_attempt()
                return self.fail(Reason.OVERFLOW)
            return self.attempt_failed(Reason.UPSTREAM_CONNECT_FAILURE, "connect-failure")
        if self.mgr.access_log is not None:
            self.t_connected = time.monotonic()
        self.attach(conn, reused=False)

    def attach(self, conn, *, reused: bool) -> None:
        self.upstream = conn
        self.reused = reused
        conn.exchange = self
        conn.requests += 1
        if self.request.method == b"HEAD":
            conn.codec.expect_head_response()
        if self.body:
            self.mgr.flusher.send(conn, self.head + b"".join(self.body))
            if self.body_size > self._buffer_limit():
                self.retriable = False
                self.body = []
            self.down.resume_reading()
        else:
            conn.out.append(self.head)  # flusher.send(conn, head), without the call
            self.mgr.flusher.queue_upstream(conn)

    def _hash_key(self) -> bytes | None:
        for policy in self.route.hash_policies:
            if policy.kind == "source_ip":
                return self.down.peer_ip()
            if policy.kind == "header":
                for n, v in self.request.headers:
                    if n == policy.name:
                        return v
            elif policy.kind == "query_parameter":
                _, sep, query = self.request.target.partition(b"?")
                if sep:
                    for pair in query.split(b"&"):
                        name, _, value = pair.partition(b"=")
                        if name == policy.name:
                            return value
            else:  # cookie
                for n, v in self.request.headers:
                    if n == b"cookie":
                        for part in v.split(b";"):
                            name, _, value = part.strip().partition(b"=")
                            if name == policy.name:
                                return value
        return None

    def _outlier(self, status: int) -> None:
        """Tell the cluster's outlier detector how this try went (0: no response)."""
        detector = self.cluster.outlier
        if detector is not None and self.host is not None:
            detector.observe(self.host, status)

    def _end_attempt(self) -> None:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        if self.host is not None:
            self.host.active -= 1
            self.host = None

    def _can_retry(self, condition: str | None, status: int = 0) -> bool:
        if self.retry_held:  # the last retry is resolved: its max_retries slot is free
            self._release_retry()
        policy = self.route.retry if self.route else None
        if policy is None or self.retries >= policy.num_retries or not self.retriable:
            return False
        if self.response_started or self.finished:
            return False
        on = policy.retry_on
        if condition is not None:
            wanted = not on.isdisjoint(_COVERS[condition])
        else:
            wanted = (("5xx" in on and status >= 500)
                      or ("gateway-error" in on and status in _GATEWAY)
                      or ("retriable-status-codes" in on
                          and status in policy.retriable_status_codes))
        if not wanted:
            return False
        pool = self.cluster.pool
        if pool.retries >= pool.limits.max_retries:
            self.cluster.stats.rq_retry_overflow += 1
            return False
        # The budget is asked last, so only retries that would really happen spend it.
        return self.cluster.budget.allow()

    def _release_retry(self) -> None:
        self.retry_held = False
        self.cluster.pool.retries -= 1

    def attempt_failed(self, reason: Reason, condition: str | None) -> None:
        if self.cluster is not None:
            self._outlier(0)
        self._end_attempt()
        if self._can_retry(condition):
            self._schedule_retry()
        else:
            self.fail(reason)

    def _schedule_retry(self) -> None:
        policy = self.route.retry
        self.retries += 1
        self.cluster.stats.rq_retry += 1
        self.cluster.pool.retries += 1
        self.retry_held = True
        if policy.previous_hosts:  # the next attempt avoids this one's host
            self.tried = (*self.tried, self.upstream_key) if self.tried else (self.upstream_key,)
        # Envoy's fully jittered exponential back-off: uniform in [0, base * (2^n - 1)].
        ceiling = min(policy.base_interval * ((1 << self.retries) - 1), policy.max_interval)
        self.retry_handle = self.mgr.loop.call_later(random.random() * ceiling, self._retry)

    def _retry(self) -> None:
        self.retry_handle = None
        if not self.finished:
            self.attempt()

    # -- response side ------------------------------------------------------------------

    def on_upstream_events(self, conn, events: list) -> None:
        for ev in events:
            if self.upstream is not conn:
                break  # a retry or a failure already let go of this connection
            kind = type(ev)
            if kind is Response:
                self.on_response_head(conn, ev)
            elif kind is EndOfMessage:
                if self.upgraded or not self.response_started:
                    continue  # the end of a 1xx interim head or of the 101: not the response
                if ev is not events[-1] or conn.codec.in_message:
                    # Bytes past the end of the response: whatever they are, they must not
                    # be read as the answer to the next request on this connection.
                    conn.reusable = False
                self.on_response_end(conn, ev.trailers)
            elif self.response_started:  # Data, or Upgraded tunnel bytes
                data = ev.data
                if data:
                    self.bytes_sent += len(data)
                    # down.send(), without the call
                    self.down.out.append(encode_chunk(data) if self.down_chunked else data)
        down = self.down  # down.flush(), without the call
        if down.out and not down.closed:
            self.mgr.flusher.queue_downstream(down)

    def on_response_head(self, conn, resp) -> None:
        status = resp.status
        if status < 200 and status != 101:
            return  # 1xx interim: the client already had our own 100 Continue
        detector = self.cluster.outlier  # _outlier(status), without the call
        if detector is not None and self.host is not None:
            # observe() has nothing to do for a success on a host with no failure run,
            # unless the failure-rate rule counts tries: told here without the call
            if (status >= 500 or self.host.consecutive_5xx
                    or detector.config.failure_rate is not None):
                detector.observe(self.host, status)
        retry = self.route.retry
        if retry is not None and status >= retry.lowest_retriable \
                and (status >= 500 or status in retry.retriable_status_codes) \
                and self._can_retry(None, status):
            conn.exchange = None
            conn.close()
            self.upstream = None
            self._end_attempt()
            self._schedule_retry()
            return
        self.response_started = True
        if self.retry_held:  # the retry is resolved: free its max_retries slot now
            self._release_retry()
        if self.mgr.access_log is not None:
            self.t_first_byte = time.monotonic()
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        self.code = status
        self.upstream_keep_alive = resp.keep_alive
        req = self.request
        down = self.down
        framing = b""
        keep_alive = req.keep_alive and not self.mgr.draining
        if status == 101:
            self.upgraded = True
            if self.timer is not None:
                self.timer.discard(self)
                self.timer = None
            framing = b"connection: upgrade\r\nupgrade: %s\r\n" % (req.upgrade or b"")
            keep_alive = True  # the tunnel ends the connection when it ends
        else:
            if req.upgrade is not None:
                keep_alive = False  # the client may already be sending tunnel bytes
            no_body = req.method == b"HEAD" or status in (204, 304)
            if not no_body and resp.content_length < 0:
                if req.http10:
                    keep_alive = False  # HTTP/1.0 knows no chunked: close-delimited
                else:
                    framing = _CHUNKED
                    self.down_chunked = True
            if not keep_alive:
                framing += _CLOSE
                down.close_after = True
            elif req.http10:
                framing += _KEEP_ALIVE
        headers = resp.headers
        if self.route.response_headers is not None:
            headers = self.route.response_headers.apply(headers)
        down.out.append(encode_response_head(status, headers, framing))  # down.send()

    def on_response_end(self, conn, trailers) -> None:
        if self.down_chunked:
            self.down.send(encode_last_chunk(trailers))
        flusher = self.mgr.flusher
        if flusher.direct:  # sparse load: the answer out first, the accounting after
            down = self.down  # down.flush(), without the call
            if down.out and not down.closed:
                flusher.queue_downstream(down)
        self.upstream = None
        if not (self.upstream_keep_alive and self.request_done) or self.request.upgrade:
            # After a refused upgrade the upstream may read the client's tunnel bytes as
            # more requests, whose answers must not reach the next user of this connection.
            conn.reusable = False
        conn.host.release(conn)
        self.response_done = True
        self.finish()

    def on_upstream_lost(self, conn, tail) -> None:
        if conn is not self.upstream:
            return
        if tail:
            self.on_upstream_events(conn, tail)  # a close-delimited body just ended
            return
        self.upstream = None
        conn.exchange = None
        if self.upgraded:
            self.response_done = True
            self.finish()
            self.down.close()
            return
        if self.response_started:
            self.cluster.stats.rq_reset += 1
            return self.abort(Reason.UPSTREAM_RESET)
        if self.reused and not conn.received and self.retriable:
            # A pooled connection the upstream had already closed: not the request's
            # fault, so try once more on a fresh connection without spending a retry.
            self._end_attempt()
            self.attempts -= 1
            return self.attempt()
        self.cluster.stats.rq_reset += 1
        self.attempt_failed(Reason.UPSTREAM_RESET, "reset")

    def on_upstream_error(self, conn, exc) -> None:
        conn.exchange = None
        conn.close()
        self.upstream = None
        if self.response_started:
            return self.abort(Reason.UPSTREAM_PROTOCOL_ERROR)
        self.attempt_failed(Reason.UPSTREAM_PROTOCOL_ERROR, None)

    def pause_downstream_reading(self) -> None:
        """The upstream's write buffer is full: stop reading the request body for now."""
        self.down.pause_reading()

    def resume_downstream_reading(self) -> None:
        self.down.resume_reading()

    # -- timeouts -----------------------------------------------------------------------

    def _drop_upstream(self) -> None:
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.exchange = None
            conn.close()

    def on_try_timeout(self) -> None:
        self.try_timer = None
        if self.finished or self.response_started:
            return
        self.cluster.stats.rq_timeout += 1
        self._drop_upstream()
        self.attempt_failed(Reason.UPSTREAM_TIMEOUT, "timeout")

    def on_timeout(self) -> None:
        self.timer = None  # its slot was expired
        if self.finished:
            return
        self.cluster.stats.rq_timeout += 1
        self._drop_upstream()
        if self.response_started:
            return self.abort(Reason.UPSTREAM_TIMEOUT)
        self._end_attempt()
        self.fail(Reason.UPSTREAM_TIMEOUT)

    # -- endings ------------------------------------------------------------------------

    def fail(self, reason: Reason) -> None:
        if self.response_started:
            return self.abort(reason)
        self.local_reply(reason)

    def local_reply(self, reason: Reason, *, status: int = 0) -> None:
        """Answer the request ourselves, naming the reason (`status` overrides the usual
        status for the reason, as a fault abort's configured status does)."""
        self.reason = reason
        req = self.request
        keep_alive = req.keep_alive and self.request_done_or_bodyless() and not self.mgr.draining
        self.code, wire = local_response(
            reason, keep_alive=keep_alive, http10=req.http10, head_only=req.method == b"HEAD",
            status=status)
        if not keep_alive:
            self.down.close_after = True
        self.response_started = self.response_done = True
        self.down.send(wire)
        # A timer or an upstream event may have brought us here, outside the downstream's
        # read batch that ends in a flush: send now.
        self.down.flush()
        self.finish()

    def direct_reply(self, status: int, body: bytes, *, extra: list = ()) -> None:
        req = self.request
        keep_alive = req.keep_alive and self.request_done_or_bodyless() and not self.mgr.draining
        self.code = status
        if not keep_alive:
            self.down.close_after = True
        self.response_started = self.response_done = True
        headers = list(extra)
        if self.route is not None and self.route.response_headers is not None:
            headers = self.route.response_headers.apply(headers)
        self.down.send(direct_response(status, body, keep_alive=keep_alive, http10=req.http10,
                                       head_only=req.method == b"HEAD", headers=headers))
        self.finish()

    def redirect_reply(self, rd) -> None:
        req = self.request
        path, sep, query = req.target.partition(b"?")
        if rd.path is not None:
            path = rd.path
        elif rd.prefix_rewrite is not None:
            path = rd.prefix_rewrite + path[len(self.route.path):]
        if rd.strip_query or (rd.path is not None and b"?" in rd.path):
            sep = query = b""
        host = rd.host or req.host
        if rd.port:
            host = b"%s:%d" % (host.rsplit(b":", 1)[0] if b"]" not in host[-1:] else host, rd.port)
        location = b"%s://%s%s%s%s" % (rd.scheme or b"http", host, path, sep, query)
        self.direct_reply(rd.status, b"", extra=[(b"location", location)])

    def request_done_or_bodyless(self) -> bool:
        return self.request_done or not self.request.has_body

    def abort(self, reason: Reason) -> None:
        """The response had started: the only honest signal left is closing the connection."""
        self.reason = reason
        self._drop_upstream()
        self.response_done = True
        self.finish()
        self.down.abort()

    def on_downstream_lost(self) -> None:
        if self.finished:
            return
        self._drop_upstream()
        self.response_done = True
        if not self.response_started:
            self.code = 0  # the client went away first (Envoy's 0 / "DC")
        self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.try_timer is not None:
            self._end_attempt()
        else:  # _end_attempt(), without the call
            host = self.host
            if host is not None:
                host.active -= 1
                self.host = None
        if self.timer is not None:
            self.timer.discard(self)
            self.timer = None
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        if self.retry_held:
            self._release_retry()
        mgr = self.mgr
        mgr.record(self)
        if mgr.completions:  # filters that account for outcomes (circuit breakers)
            for f in mgr.completions:
                f.on_complete(self)
        down = self.down  # down.on_exchange_done(self), without the call
        if down.exchange is self and self.request_done:
            if down.backlog or down.close_after or down.paused or mgr.draining:
                down.next_request()
            else:  # down.next_request() with nothing to do, without the call
                down.exchange = None
                down.discarded = 0
                down.backlog = None
        # (an answer before the whole request: the rest of its body is read and dropped)
