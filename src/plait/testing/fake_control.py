"""A stand-in for the control plane's REST API, for sidecar tests that watch what a
sidecar sends it: registration, lease heartbeats, governance events and telemetry.

Why: a sidecar test about events or instance health should not depend on everything a
real `plait control` needs (store, CA, tokens); it needs a peer on a real socket that
answers as the API does and records each call. Tests check the recorded bodies against
the real API's own validators, so the two cannot drift apart unnoticed.

How: `http.server` in a thread of the test process. `POST /api/v1/registry/instances`
answers 201 with a lease id; `PUT`/`DELETE` on a lease answer 200 (404 for an unknown
lease); `POST /api/v1/events` and `/api/v1/telemetry` answer `status` (200 unless set,
e.g. 503 to play a control plane that is down). `wait_for(predicate, timeout=)` blocks on
a condition until the recorded calls satisfy it. Use as a context manager.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any  # decoded JSON, None when empty


class FakeControlPlane:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.status = 200  # for events and telemetry
        self._cond = threading.Condition()
        self._leases = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                status, answer = fake._answer(self.command, self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-control-plane")
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self._cond:
            self.calls.append(Call(method, path, body))
            self._cond.notify_all()
            if method == "POST" and path == "/api/v1/registry/instances":
                self._leases += 1
                return 201, {"leaseId": f"lease-{self._leases}", "ttl": 10}
            if path.startswith("/api/v1/registry/leases/"):
                known = path.rsplit("/", 1)[1] in {f"lease-{i}" for i in range(1, self._leases + 1)}
                return (200, {}) if known else (404, {"error": "no such lease"})
            if path in ("/api/v1/events", "/api/v1/telemetry"):
                return self.status, {"accepted": 1}
            return 404, {"error": "not found"}

    def posts(self, path: str) -> list[Any]:
        with self._cond:
            return [c.body for c in self.calls if c.method in ("POST", "PUT") and c.path == path]

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float) -> Any:
        """Block until `predicate()` (called under the lock, on the recorded calls) is
        truthy; return its value. AssertionError after `timeout` seconds."""
        with self._cond:
            value = self._cond.wait_for(predicate, timeout=timeout)
            if not value:
                raise AssertionError(f"not seen within {timeout:g}s; calls: "
                                     f"{[(c.method, c.path) for c in self.calls][-20:]}")
            return value

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
