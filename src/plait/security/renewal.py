"""When a workload certificate is renewed: at half of its lifetime.

Half life leaves as much time to retry as the certificate has already served (Istio and
SPIRE make the same choice), so a control plane that is down for less than half a
lifetime costs no outage.
"""

from __future__ import annotations

import datetime

from cryptography import x509

UTC = datetime.timezone.utc


def renew_at(cert: x509.Certificate) -> datetime.datetime:
    """The moment (UTC) from which `cert` should be renewed."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) / 2


def seconds_until_renewal(cert: x509.Certificate, *, now: datetime.datetime | None = None) -> float:
    """Seconds from `now` (default: the current time) until `renew_at`; 0 when overdue."""
    now = now or datetime.datetime.now(UTC)
    return max(0.0, (renew_at(cert) - now).total_seconds())


def needs_renewal(cert: x509.Certificate, *, now: datetime.datetime | None = None) -> bool:
    return seconds_until_renewal(cert, now=now) == 0.0
