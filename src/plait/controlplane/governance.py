"""How a cluster-wide (`scope: global`) rate limit becomes one bucket per instance.

A global RateLimit rule promises the protected service at most `limit.requests` per
`limit.per` in total. Without a shared counter on the request path, the control plane
keeps that promise by dividing the quota among the live instances of the service and
giving each sidecar its share as an ordinary local token bucket. The division is whole
requests: every instance gets `quota // n`, and the first `quota % n` instances (by
index) one more, so the shares add up to the quota exactly and differ by at most one.
When instances come or go the registry changes, the push side translates again, and
every sidecar gets its new share.

Pure functions, no I/O: the xDS translator calls them while building a snapshot.
A `scope: local` rule is not divided: every instance gets the whole limit.
"""

from __future__ import annotations

import bisect
from typing import Iterable

from plait.model.rate_limit import RateLimitRule


def _divide(total: int, live_instances: int, index: int) -> int:
    if live_instances < 1:
        raise ValueError("live_instances must be at least 1")
    if not 0 <= index < live_instances:
        raise ValueError(f"this_instance_index {index} is not in 0..{live_instances - 1}")
    base, remainder = divmod(total, live_instances)
    return base + (1 if index < remainder else 0)


def quota_share(rule: RateLimitRule, live_instances: int, this_instance_index: int) -> int:
    """Requests per `rule.limit.per` that the instance at `this_instance_index` (0-based,
    of `live_instances`) may admit.

    Global rules: the shares of indices 0..n-1 add up to `rule.limit.requests` and differ
    by at most one, so none is 0 while the quota is at least the instance count. With
    fewer requests than instances, the instances past the quota get 0: the total stays
    within the promise. Local rules: the whole limit. Raises ValueError for
    `live_instances < 1` or an index outside 0..n-1.
    """
    if rule.scope == "local":
        _divide(0, live_instances, this_instance_index)  # same argument checks
        return rule.limit.requests
    return _divide(rule.limit.requests, live_instances, this_instance_index)


def burst_share(rule: RateLimitRule, live_instances: int, this_instance_index: int) -> int:
    """The instance's bucket size, divided like `quota_share` (whole for local rules).

    At least 1 whenever its `quota_share` is at least 1, so a bucket can always hold the
    requests its refill gives it.
    """
    if rule.scope == "local":
        _divide(0, live_instances, this_instance_index)
        return rule.bucket_size
    share = _divide(rule.bucket_size, live_instances, this_instance_index)
    return max(share, min(1, quota_share(rule, live_instances, this_instance_index)))


def instance_index(instance_ids: Iterable[str], own_id: str) -> tuple[int, int]:
    """(live_instances, this_instance_index) for the instance `own_id` among the service's
    live `instance_ids`.

    Instances are ordered by id, so every sidecar and every translation agree on who is
    who without any coordination. An `own_id` not (yet) among them is counted as if it
    were registered: the share it gets is the one it will have once its registration
    lands (until then the total can exceed the quota by that share; the registration
    triggers a push that rebalances everyone).
    """
    ids = sorted(set(instance_ids))
    if own_id not in ids:
        bisect.insort(ids, own_id)
    return len(ids), ids.index(own_id)
