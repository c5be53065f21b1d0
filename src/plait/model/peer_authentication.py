"""PeerAuthentication (security.istio.io/v1): whether a workload's inbound side takes
mutual TLS, plaintext, or both.

Modes are Istio's: STRICT (mTLS only), PERMISSIVE (mTLS and plaintext on the same port,
for migration), DISABLE (plaintext only), UNSET (inherit). A resource in the mesh root
namespace without a selector is mesh-wide; one elsewhere without a selector covers its
namespace; one with `selector.matchLabels` covers the workloads with those labels in its
namespace. `portLevelMtls` (port → mode) needs a selector, as in Istio; in Plait the port
is the app's port behind the sidecar (Istio's workload port).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from plait.core.errors import ConfigError
from plait.model.base import IstioModel, Metadata, PortNumber

Mode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class MutualTls(IstioModel):
    mode: Mode = "UNSET"


class LabelSelector(IstioModel):
    """Istio's `selector` (a WorkloadSelector in the security API)."""

    match_labels: dict[str, str] = Field(default_factory=dict)


class PeerAuthenticationSpec(IstioModel):
    selector: LabelSelector | None = None
    mtls: MutualTls | None = None
    port_level_mtls: dict[PortNumber, MutualTls] = Field(default_factory=dict)


class PeerAuthentication(IstioModel):
    api_version: Literal["security.istio.io/v1", "security.istio.io/v1beta1"]
    kind: Literal["PeerAuthentication"]
    metadata: Metadata
    spec: PeerAuthenticationSpec = PeerAuthenticationSpec()


def check_peer_authentication(pa: PeerAuthentication) -> None:
    spec = pa.spec
    if spec.port_level_mtls and (spec.selector is None or not spec.selector.match_labels):
        raise ConfigError("spec.portLevelMtls", "needs a selector with matchLabels "
                          "(port-level modes apply to chosen workloads only, as in Istio)")
