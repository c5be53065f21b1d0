"""mTLS for the xDS server, when the API is served over TLS (`plait control --api-tls`).

One switch for both channels: with `--api-tls` a sidecar reaches the API and xDS over TLS
and must present a workload certificate on the xDS stream (its config describes the whole
mesh). The server presents the API's certificate (issued by the mesh CA for the API's host
names, or the operator's) and verifies clients against the mesh trust bundle.

gRPC asks `fetch` for new material before every handshake; the files' stat is compared
with what was loaded, so a renewed server certificate or a rotated bundle (both roots
during the overlap, then the new one) applies to the next connection without a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc


def _stamp(paths: tuple[Path, ...]) -> tuple:
    return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in map(os.stat, paths))


class XdsTls:
    def __init__(self, *, cert_chain: Path, key: Path, bundle: Path) -> None:
        self.paths = (Path(cert_chain), Path(key), Path(bundle))
        self._stamp: tuple | None = None
        self.reloads = 0

    def _configuration(self):
        chain, key, bundle = (p.read_bytes() for p in self.paths)
        return grpc.ssl_server_certificate_configuration(
            [(key, chain)], root_certificates=bundle)

    def fetch(self):
        """gRPC's callback: new material if the files changed, else None (keep)."""
        try:
            stamp = _stamp(self.paths)
            if stamp == self._stamp:
                return None
            config = self._configuration()
        except OSError:
            return None  # keep serving with what was loaded; the files are being replaced
        self._stamp = stamp
        self.reloads += 1
        return config

    def credentials(self) -> grpc.ServerCredentials:
        self._stamp = _stamp(self.paths)
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), self.fetch, require_client_authentication=True)


def xds_credentials(api_tls, authority) -> grpc.ServerCredentials:
    """Server credentials from the API's TLS material (`ApiTls`) and the CA's bundle."""
    return XdsTls(cert_chain=api_tls.cert_file, key=api_tls.key_file,
                  bundle=authority.directory / "bundle.pem").credentials()
