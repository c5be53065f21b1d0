"""The REST API over TLS (`plait control --api-tls`), with workload client certificates.

The server certificate is the operator's (`--api-cert`, `--api-key`) or, by default, one
the mesh CA issues at start-up for the API's host names (`--api-hostname`, repeatable;
default localhost, 127.0.0.1, ::1 and the listen address), renewed at half its lifetime.
The key stays in `<data-dir>/api-tls/key.pem` (0600).

Clients may present a certificate (not required: operators use bearer tokens); one that
is presented must verify against the mesh trust bundle. The verified certificate reaches
the app as the ASGI TLS extension (`scope["extensions"]["tls"]["client_cert_chain"]`),
added by `TlsHttpToolsProtocol`, since uvicorn does not provide it itself. When the CA's
bundle changes (a rotation) or the certificate is renewed, the next handshake uses the
new material (`ReloadingServerContext`); nothing is re-bound.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from plait.controlplane.ca import Authority
from plait.security import keys, renewal
from plait.security.files import write_file
from plait.security.tls import ReloadingServerContext

log = logging.getLogger("plait.control")


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ASGI TLS extension on every request."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls: dict | None = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            self._tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
                         "tls_version": None, "cipher_suite": None, "server_cert": None}  # fmt: skip

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[typeddict-unknown-key]


def default_hosts(api_host: str) -> list[str]:
    hosts = ["localhost", "127.0.0.1", "::1"]
    try:
        unspecified = ipaddress.ip_address(api_host).is_unspecified
    except ValueError:
        unspecified = False
    if api_host and not unspecified and api_host not in hosts:
        hosts.append(api_host)
    return hosts


class ApiTls:
    """The API's TLS material. `context` goes to uvicorn; `run()` renews until cancelled."""

    def __init__(self, authority: Authority, data_dir: Path, *, hosts: list[str],
                 cert: str | None = None, key: str | None = None) -> None:  # fmt: skip
        self._authority = authority
        self._hosts = hosts
        self._operator = bool(cert)
        folder = data_dir / "api-tls"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.cert_file = Path(cert) if cert else folder / "cert.pem"
        self.key_file = Path(key) if key else folder / "key.pem"
        if not self._operator:
            self._issue()
        self._reloading = ReloadingServerContext(
            cert_chain=self.cert_file, key=self.key_file,
            bundle=authority.directory / "bundle.pem", require_client_cert=False)
        self.context = self._reloading.context
        authority.subscribe(self._bundle_changed)

    def _issue(self) -> None:
        if self.key_file.exists():
            key = keys.load_key(self.key_file)
        else:
            key = keys.generate_key(self.key_file)
        issued = self._authority.issue_server(key.public_key(), hosts=self._hosts)
        write_file(self.cert_file, issued.chain_pem.encode())
        self._cert = issued.cert

    def _bundle_changed(self) -> None:
        if not self._operator:
            self._issue()  # signed by the new root after a rotation
        self._reloading.reload()

    async def run(self) -> None:
        """Renew the CA-issued server certificate at half its lifetime, until cancelled."""
        if self._operator:
            return
        while True:
            await asyncio.sleep(max(1.0, renewal.seconds_until_renewal(self._cert)))
            try:
                self._issue()
                self._reloading.reload()
            except (OSError, ValueError, ssl.SSLError) as exc:
                log.error("cannot renew the API certificate: %s", exc)
