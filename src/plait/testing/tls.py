"""One real TLS handshake over 127.0.0.1 between two `ssl.SSLContext`s, for tests.

Why: whether a certificate is accepted is decided by OpenSSL during a handshake, so tests
of mTLS contexts, trust bundles and rotations should run one rather than reason about
certificates. How: a listening socket on port 0, a server thread that accepts one
connection and wraps it, the client wrapping its own; each side reports the peer's SPIFFE
ID or the error it hit. Both sockets are closed and the thread joined before returning.

Also `enroll`: a workload identity (key, certificate, bundle) from a real `Authority`,
through the same CSR checks the API applies.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass

from plait.controlplane.ca import Authority, check_csr
from plait.security.spiffe import SpiffeId
from plait.security.tls import peer_id
from plait.security.workload import IdentityFiles


@dataclass
class Handshake:
    server_saw: SpiffeId | None = None  # the client's identity, as the server verified it
    client_saw: SpiffeId | None = None
    version: str | None = None
    server_error: BaseException | None = None
    client_error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, *,
              timeout: float = 10.0) -> Handshake:
    """Connect `client` to `server` once; the result says who saw whom, or what failed."""
    result = Handshake()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError as exc:
                result.server_error = exc
                return
            conn.settimeout(timeout)
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    result.server_saw = peer_id(tls)
                    tls.sendall(b"k")
            except (OSError, ValueError) as exc:
                result.server_error = exc
            finally:
                conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=timeout) as raw, \
                    client.wrap_socket(raw) as tls:  # fmt: skip
                result.client_saw = peer_id(tls)
                result.version = tls.version()
                tls.recv(1)  # TLS 1.3: the server's verdict on our certificate arrives here
        except (OSError, ValueError) as exc:
            result.client_error = exc
        thread.join(timeout)
    return result


def enroll(ca: Authority, directory, account: str, *, namespace: str = "default") -> IdentityFiles:
    """Make a key in `directory` (or reuse it), have `ca` sign its CSR for
    `spiffe://<td>/ns/<namespace>/sa/<account>`, and store the answer there."""
    files = IdentityFiles(directory)
    uri = f"spiffe://{ca.trust_domain}/ns/{namespace}/sa/{account}"
    issued = ca.issue_workload(check_csr(files.csr(), spiffe_uri=uri), spiffe_uri=uri)
    files.save({"certificateChain": issued.chain_pem, "trustBundle": issued.bundle_pem})
    return files
