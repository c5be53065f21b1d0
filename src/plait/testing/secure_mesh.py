"""A mesh with security on, for end-to-end tests of identities, mTLS and authorization.

Why: the security promises (no certificate without a valid token, mTLS between sidecars,
policies enforced, certificates renewed and roots rotated without losing a request) only
mean something with the real control plane, real sidecars and real handshakes.

How: `SecureMesh` is `plait.testing.mesh.Mesh` with `plait control --api-tls` (the API and
xDS over TLS, a bootstrap admin token, short certificate lifetimes, root rotations
finished by hand), and apps whose sidecars start the way an operator starts them: a join
token made with `plait token create --ns NS --sa SERVICE` in a file, `--token-file`,
`--cert-dir`, `--ca-file`. Everything is stopped by PID in `close()`.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from plait.security.workload import IdentityFiles
from plait.testing.control import ControlPlane, cli_output, start_control
from plait.testing.mesh import App, Mesh, _two_free_ports
from plait.testing.sidecar import start_upstream


@dataclass
class SecureApp(App):
    token_file: Path | None = None
    cert_dir: Path | None = None

    def argv(self) -> list[str]:
        argv = super().argv() + ["--ca-file", str(self.mesh.control.ca_file),
                                 "--cert-dir", str(self.cert_dir)]
        if self.token_file is not None:
            argv += ["--token-file", str(self.token_file)]
        return argv

    @property
    def identity(self) -> IdentityFiles:
        """The files this app's sidecar keeps (its key stays there)."""
        return IdentityFiles(self.cert_dir)


class SecureMesh(Mesh):
    def __init__(self, workdir: str | os.PathLike, *, cert_ttl: str = "20s",
                 lease_ttl: float = 3.0) -> None:
        self.cert_ttl = cert_ttl
        self.tokens: list[str] = []  # every token handed out, for the no-secret checks
        super().__init__(workdir, lease_ttl=lease_ttl)

    def start_control(self, *, same_ports: bool = False) -> ControlPlane:
        control = start_control(self.data_dir, api_tls=True, extra_args=(
            "--cert-ttl", self.cert_ttl, "--ca-overlap", "manual"))
        self._controls.append(control)
        self.control = control
        self.refresh_api()
        return control

    def refresh_api(self) -> None:
        """A new API client trusting the current bundle (after a root rotation)."""
        if self._api is not None:
            self._api.close()
        context = ssl.create_default_context(cafile=str(self.control.ca_file))
        self._api = httpx.Client(base_url=self.control.api_url, timeout=10, verify=context,
                                 headers=self.control.headers)

    def token(self, namespace: str, account: str) -> str:
        text = cli_output(self.control, "token", "create", "--ns", namespace, "--sa",
                          account).strip()
        self.tokens.append(text)
        return text

    def add_app(self, service: str, *, namespace: str = "shop", token: str | None = None,
                with_token: bool = True, instance: str = "", labels: dict | None = None,
                dependencies: tuple[str, ...] = (), sidecar: bool = True,
                **_: object) -> SecureApp:
        """An app whose sidecar proves itself with a join token for ns/NAMESPACE/sa/SERVICE
        (or `token`, or none with `with_token=False`)."""
        instance = instance or service
        upstream = start_upstream(instance)
        self._upstreams.append(upstream)
        inbound, outbound = _two_free_ports()
        home = self.workdir / instance
        home.mkdir(parents=True, exist_ok=True)
        token_file = None
        if with_token:
            token_file = home / "token"
            token_file.write_text(token if token is not None else self.token(namespace, service))
            token_file.chmod(0o600)
        app = SecureApp(mesh=self, service=service, instance=instance, labels=dict(labels or {}),
                        upstream=upstream, inbound_port=inbound, outbound_port=outbound,
                        cache_dir=home / "cache", lease_ttl=self.lease_ttl,
                        dependencies=tuple(dependencies), token_file=token_file,
                        cert_dir=home / "identity")
        self.apps[instance] = app
        if sidecar:
            app.start_sidecar()
        return app
