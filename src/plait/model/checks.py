"""Rules that span fields and need a field path deeper than one object.

Pydantic's model validators can only blame the object they sit on; these checks run on a
resource that already passed pydantic and name the exact field (`spec.subsets[2].name`).
Each check raises `ConfigError(path, reason)` on the first problem it finds.
"""

from __future__ import annotations

import ipaddress

from plait.core.errors import ConfigError
from plait.model.destination_rule import DestinationRule, TrafficPolicy
from plait.model.service_entry import ServiceEntry
from plait.model.virtual_service import VirtualService


def check_virtual_service(vs: VirtualService) -> None:
    for i, http in enumerate(vs.spec.http):
        at = f"spec.http[{i}]"
        weights = [d.weight for d in http.route]
        if len(weights) > 1 and any(w is not None for w in weights):
            total = sum(w or 0 for w in weights)
            if total != 100:
                raise ConfigError(
                    f"{at}.route",
                    f"destination weights total {total}; with more than one destination "
                    "they must total 100",
                )
        if http.mirror_percentage is not None and http.mirror is None:
            raise ConfigError(f"{at}.mirrorPercentage", "needs mirror to be set")


def _check_traffic_policy(policy: TrafficPolicy | None, at: str) -> None:
    if policy is None:
        return
    seen: dict[int, int] = {}
    for j, level in enumerate(policy.port_level_settings):
        number = level.port.number
        if number in seen:
            raise ConfigError(
                f"{at}.portLevelSettings[{j}].port.number",
                f"port {number} already has settings at portLevelSettings[{seen[number]}]",
            )
        seen[number] = j


def check_destination_rule(dr: DestinationRule) -> None:
    _check_traffic_policy(dr.spec.traffic_policy, "spec.trafficPolicy")
    seen: dict[str, int] = {}
    for j, subset in enumerate(dr.spec.subsets):
        if subset.name in seen:
            raise ConfigError(
                f"spec.subsets[{j}].name",
                f"duplicate subset name {subset.name!r} (also spec.subsets[{seen[subset.name]}])",
            )
        seen[subset.name] = j
        _check_traffic_policy(subset.traffic_policy, f"spec.subsets[{j}].trafficPolicy")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_service_entry(se: ServiceEntry) -> None:
    spec = se.spec
    names: dict[str, int] = {}
    numbers: dict[int, int] = {}
    for j, port in enumerate(spec.ports):
        if port.name in names:
            raise ConfigError(f"spec.ports[{j}].name", f"duplicate port name {port.name!r}")
        if port.number in numbers:
            raise ConfigError(f"spec.ports[{j}].number", f"duplicate port number {port.number}")
        names[port.name] = j
        numbers[port.number] = j
    if spec.endpoints and spec.workload_selector is not None:
        raise ConfigError("spec.workloadSelector", "set only one of endpoints, workloadSelector")
    if spec.resolution in (None, "NONE") and spec.endpoints:
        raise ConfigError("spec.endpoints", "endpoints need resolution STATIC or DNS")
    if spec.resolution == "STATIC" and not spec.endpoints and spec.workload_selector is None:
        raise ConfigError("spec.endpoints", "resolution STATIC needs endpoints")
    for k, ep in enumerate(spec.endpoints):
        at = f"spec.endpoints[{k}]"
        if spec.resolution == "STATIC" and not _is_ip(ep.address):
            raise ConfigError(f"{at}.address", "resolution STATIC needs an IP address")
        for name in ep.ports:
            if name not in names:
                raise ConfigError(f"{at}.ports.{name}", f"no port named {name!r} in spec.ports")
