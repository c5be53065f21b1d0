"""Delivering one alarm to its webhook: a JSON POST, retried with back-off and jitter.

Temporary failures (no connection, a timeout, 5xx, 408, 429) are retried up to
`RetryPolicy.attempts` attempts in all, waiting before retry n (n = 1, 2, ...) a delay
drawn from [d/2, d] with d = min(cap, base * 2**(n-1)): exponential back-off with "equal
jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015), so receivers
recovering from an outage are not hit by every control plane in lockstep, yet no retry
comes immediately. A `Retry-After` in seconds on 429/503 is honoured up to `cap`.
Other 4xx answers are permanent (the receiver says the request itself is wrong) and are
not retried. Every attempt carries `x-plait-alarm-id`, so a receiver can drop the
duplicate a timed-out but delivered attempt may cause.

`sleep` and `rand` are injectable, so the schedule is tested without waiting.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import httpx

from plait.controlplane.alarms.log import DeliveryState
from plait.model.alarm_rule import Webhook

_TEMPORARY = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6  # in all, the first one included
    base: float = 0.5  # seconds: the first back-off is drawn from [base/2, base]
    cap: float = 30.0  # longest back-off
    timeout: float = 5.0  # per attempt, connect to end of response

    def backoff(self, retry: int, rand: Callable[[], float]) -> float:
        """Seconds to wait before retry number `retry` (1 for the second attempt)."""
        ceiling = min(self.cap, self.base * 2 ** (retry - 1))
        return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int  # 1-based
    status: int | None  # HTTP status, None when no response came
    error: str | None
    state: DeliveryState  # PENDING while more attempts will follow


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("retry-after", "")
    if response.status_code in (429, 503) and value.isdigit():
        return min(float(value), cap)
    return None


async def deliver(client: httpx.AsyncClient, webhook: Webhook, payload: dict[str, Any], *,
                  alarm_id: int, policy: RetryPolicy = RetryPolicy(),
                  on_attempt: Callable[[Attempt], None] = lambda attempt: None,
                  sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                  rand: Callable[[], float] = random.random) -> Attempt:  # fmt: skip
    """POST `payload` to the webhook until it is accepted (2xx) or attempts run out.

    Calls `on_attempt` after every attempt; returns the last attempt, whose `state` is
    DELIVERED or FAILED. Never raises for anything the receiver does.
    """
    headers = {**webhook.headers, "x-plait-alarm-id": str(alarm_id)}
    number = 0
    while True:
        number += 1
        status, error, wait = None, None, None
        try:
            response = await client.post(webhook.url, json=payload, headers=headers,
                                         timeout=policy.timeout)  # fmt: skip
            status = response.status_code
            wait = _retry_after(response, policy.cap)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if status is not None and 200 <= status < 300:
            state = DeliveryState.DELIVERED
        elif status is not None and status < 500 and status not in _TEMPORARY:
            state, error = DeliveryState.FAILED, f"refused with HTTP {status}; not retried"
        elif number >= policy.attempts:
            state = DeliveryState.FAILED
            error = error or f"HTTP {status}"
        else:
            state = DeliveryState.PENDING
            error = error or f"HTTP {status}"
        attempt = Attempt(number, status, error, state)
        on_attempt(attempt)
        if state is not DeliveryState.PENDING:
            return attempt
        await sleep(wait if wait is not None else policy.backoff(number, rand))
