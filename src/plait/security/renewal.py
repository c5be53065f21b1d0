"""When a workload certificate is renewed: at half of its lifetime.

Half life leaves as much time to retry as the certificate has already served (Istio and
SPIRE make the same choice), so a control plane that is down for less than half a
lifetime costs no outage.
"""

from __future__ import annotations

import datetime

from cryptography import x509

UTC = datetime.timezone.utc
# The mesh CA dates certificates back by this much so that peers whose clocks run slow
# accept them at once; half life is counted from the real issue time, not the backdated
# start (else a short-lived certificate would be "due" the moment it arrives).
BACKDATE = datetime.timedelta(minutes=5)


def renew_at(cert: x509.Certificate) -> datetime.datetime:
    """The moment (UTC) from which `cert` should be renewed: half way between its issue
    (its start plus BACKDATE, when it is long enough to have been backdated) and its end."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    issued = start + BACKDATE if end - start > BACKDATE else start
    return issued + (end - issued) / 2


def seconds_until_renewal(cert: x509.Certificate, *, now: datetime.datetime | None = None) -> float:
    """Seconds from `now` (default: the current time) until `renew_at`; 0 when overdue."""
    now = now or datetime.datetime.now(UTC)
    return max(0.0, (renew_at(cert) - now).total_seconds())


def needs_renewal(cert: x509.Certificate, *, now: datetime.datetime | None = None) -> bool:
    return seconds_until_renewal(cert, now=now) == 0.0
