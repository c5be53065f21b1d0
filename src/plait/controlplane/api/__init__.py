"""The control plane's REST API: `create_app(store=..., registry=..., proxy_status=...)`."""

from plait.controlplane.api.app import ProxyStatusSource, create_app

__all__ = ["ProxyStatusSource", "create_app"]
