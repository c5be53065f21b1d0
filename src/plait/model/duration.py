"""Istio duration strings ("5s", "100ms", "1.5s", "1m", "1h30m") as float seconds.

Istio's YAML takes durations in Go's `time.ParseDuration` form: one or more
`<decimal><unit>` terms. We accept the same units and reject negatives, because no Istio
field means anything by a negative duration. Everyone in the project converts with
`parse_duration`, so a duration means the same thing in the validator, the translator and
the sidecar.
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
# Longer unit names first so that "ms" is not read as "m" followed by junk.
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")


def parse_duration(text: str) -> float:
    """Return the duration `text` in seconds.

    Raises ValueError when `text` is not a non-negative Go/Istio duration such as "250ms",
    "1.5s" or "1h30m". "0" alone is accepted, as in Go.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string like '5s', not {type(text).__name__}")
    if text == "0":
        return 0.0
    if not text:
        raise ValueError("a duration must not be empty")
    pos, total = 0, 0.0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None:
            raise ValueError(
                f"invalid duration {text!r}: expected terms like '100ms', '1.5s', '2m', '1h'"
            )
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total

