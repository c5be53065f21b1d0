"""Which services a workload identity may register.

The rule: a workload may register the service named like its service account
(`sa/reviews` registers `reviews`), unless the join token that bootstrapped it named its
services explicitly (`plait token create --service a --service b`), in which case exactly
those. The list is remembered per SPIFFE ID when a join token gets a certificate, so the
same rule holds when the workload later authenticates with that certificate; the most
recent join token used for an identity sets its list.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Callable

from plait.security.spiffe import SpiffeId


class WorkloadServices:
    def __init__(self, db: sqlite3.Connection, *, now: Callable[[], float] = time.time) -> None:
        self._db = db
        self._now = now

    def remember(self, spiffe_id: SpiffeId, services: tuple[str, ...], *, token_id: str) -> None:
        self._db.execute(
            "INSERT INTO workload_services VALUES (?, ?, ?, ?) ON CONFLICT(spiffe_id) DO UPDATE"
            " SET services = excluded.services, token_id = excluded.token_id,"
            " updated_at = excluded.updated_at",
            (spiffe_id.uri, json.dumps(list(services)), token_id, self._now()))  # fmt: skip

    def services_of(self, spiffe_id: SpiffeId) -> tuple[str, ...]:
        row = self._db.execute("SELECT services FROM workload_services WHERE spiffe_id = ?",
                               (spiffe_id.uri,)).fetchone()  # fmt: skip
        listed = tuple(json.loads(row[0])) if row else ()
        return listed or (spiffe_id.service_account,)
