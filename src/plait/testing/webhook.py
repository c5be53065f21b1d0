"""A real HTTP webhook receiver on 127.0.0.1 for alarm delivery tests.

It answers each POST with the next status of a script (`statuses=[503, 503, 200]` fails
twice, then accepts), repeating the last one when the script runs out, and records every
request it got. Tests wait for requests with `wait_for(n, timeout=...)`, which blocks on
a condition rather than sleeping. It runs in a thread of the test process, so it works
for in-process tests (any event loop) and for a `plait control` subprocess alike.
Stop it with `close()` or use it as a context manager.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # decoded JSON, or the raw text when it is not JSON
    answered: int  # the status it was answered with


class WebhookReceiver:
    def __init__(self, statuses: Sequence[int] = (200,), *,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        """`headers` are added to every answer (e.g. {"retry-after": "0"})."""
        if not statuses:
            raise ValueError("give at least one status")
        self._statuses = list(statuses)
        self._extra = dict(headers or {})
        self._cond = threading.Condition()
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length).decode(errors="replace")
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with receiver._cond:
                    index = min(len(receiver.received), len(receiver._statuses) - 1)
                    status = receiver._statuses[index]
                    receiver.received.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))
                    receiver._cond.notify_all()
                self.send_response(status)
                for name, value in receiver._extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # quiet: the test reads `received`

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval only makes close() prompt; requests are served at once.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True, name="webhook-receiver")  # fmt: skip
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def wait_for(self, count: int, *, timeout: float) -> list[Received]:
        """Block until `count` requests arrived; AssertionError after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout=timeout):
                raise AssertionError(f"webhook got {len(self.received)} requests within "
                                     f"{timeout:g}s, expected {count}")  # fmt: skip
            return list(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
