"""Fired alarms and their delivery, kept in `<data-dir>/alarms.db` (SQLite).

Alarms are history an operator reads after the fact ("what fired last night, and did the
webhook get it?"), so they survive restarts. A file of their own beside the config store
keeps the two independent: alarms are written at traffic speed, config rarely. Only the
newest `MAX_ALARMS` rows are kept. A delivery cut short by a restart is marked failed
when the log is opened again, not silently left pending.
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from plait.core.errors import PlaitError

MAX_ALARMS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fired_at    REAL    NOT NULL,
    namespace   TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    condition   TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    firing      TEXT    NOT NULL,   -- JSON: what fired (Firing.to_json)
    state       TEXT    NOT NULL,   -- DeliveryState
    attempts    INTEGER NOT NULL,
    last_status INTEGER,            -- HTTP status of the last attempt, NULL if none came
    last_error  TEXT,
    updated_at  REAL    NOT NULL
)
"""
_COLUMNS = ("id, fired_at, namespace, rule, condition, service, firing, state, attempts,"
            " last_status, last_error, updated_at")  # fmt: skip


class DeliveryState(enum.Enum):
    PENDING = "pending"  # being delivered (first attempt or between retries)
    DELIVERED = "delivered"
    FAILED = "failed"  # attempts exhausted, refused for good, or cut short by a restart


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    fired_at: float  # Unix seconds
    namespace: str
    rule: str
    condition: str
    service: str
    firing: dict[str, Any]
    state: DeliveryState
    attempts: int
    last_status: int | None
    last_error: str | None
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "firedAt": self.fired_at, **self.firing,
            "delivery": {"state": self.state.value, "attempts": self.attempts,
                         "lastStatus": self.last_status, "lastError": self.last_error,
                         "updatedAt": self.updated_at},
        }  # fmt: skip


class AlarmLog:
    """Open with `AlarmLog.open(data_dir)` (or `None` for memory only); `close()` after."""

    def __init__(self, db: sqlite3.Connection, *, wall: Callable[[], float]) -> None:
        self._db = db
        self._wall = wall

    @classmethod
    def open(cls, data_dir: str | os.PathLike | None, *,
             wall: Callable[[], float] = time.time) -> AlarmLog:  # fmt: skip
        """Raises PlaitError if the file cannot be opened or is not an alarm log."""
        where = ":memory:" if data_dir is None else str(Path(data_dir) / "alarms.db")
        try:
            db = sqlite3.connect(where, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            db.execute("UPDATE alarms SET state = ?, last_error = ?, updated_at = ?"
                       " WHERE state = ?",
                       (DeliveryState.FAILED.value, "the control plane stopped before delivery",
                        wall(), DeliveryState.PENDING.value))  # fmt: skip
        except sqlite3.Error as exc:
            raise PlaitError(f"cannot open the alarm log {where}: {exc}") from None
        return cls(db, wall=wall)

    def add(self, *, namespace: str, rule: str, condition: str, service: str,
            firing: dict[str, Any]) -> Alarm:  # fmt: skip
        """Record a new alarm as pending delivery; keeps the newest MAX_ALARMS."""
        now = self._wall()
        cur = self._db.execute(
            f"INSERT INTO alarms ({_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL, ?)",
            (now, namespace, rule, condition, service, json.dumps(firing),
             DeliveryState.PENDING.value, now),
        )  # fmt: skip
        alarm_id = cur.lastrowid
        assert alarm_id is not None
        self._db.execute("DELETE FROM alarms WHERE id <= ?", (alarm_id - MAX_ALARMS,))
        return self.get(alarm_id)

    def update(self, alarm_id: int, *, state: DeliveryState, attempts: int,
               last_status: int | None, last_error: str | None) -> None:  # fmt: skip
        self._db.execute(
            "UPDATE alarms SET state = ?, attempts = ?, last_status = ?, last_error = ?,"
            " updated_at = ? WHERE id = ?",
            (state.value, attempts, last_status, last_error, self._wall(), alarm_id),
        )

    def get(self, alarm_id: int) -> Alarm:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM alarms WHERE id = ?",
                               (alarm_id,)).fetchone()  # fmt: skip
        if row is None:
            raise KeyError(alarm_id)
        return _alarm(row)

    def recent(self, *, service: str | None = None, rule: str | None = None,
               limit: int = 100) -> list[Alarm]:  # fmt: skip
        """The newest `limit` alarms (filtered by service, and by rule name), oldest first."""
        where, params = [], []
        if service is not None:
            where.append("service = ?")
            params.append(service)
        if rule is not None:
            where.append("rule = ?")
            params.append(rule)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM alarms{clause} ORDER BY id DESC LIMIT ?", (*params, limit)
        ).fetchall()
        return [_alarm(row) for row in reversed(rows)]

    def close(self) -> None:
        self._db.close()


def _alarm(row: tuple) -> Alarm:
    (alarm_id, fired_at, namespace, rule, condition, service, firing, state, attempts,
     last_status, last_error, updated_at) = row  # fmt: skip
    return Alarm(alarm_id, fired_at, namespace, rule, condition, service, json.loads(firing),
                 DeliveryState(state), attempts, last_status, last_error, updated_at)  # fmt: skip
