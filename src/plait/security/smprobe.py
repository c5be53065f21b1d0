"""What this machine can do with the Chinese national algorithms, found by trying.

Run `python -m plait.security.smprobe` to print the findings as JSON. Each finding is the
outcome of an actual attempt (a hash, an encryption, loading a key, a TLS handshake
configuration), never a version-number guess; docs/national-crypto.md reports them and a
test checks that they still hold, so the document cannot silently go stale.

SM2 material is made with the system `openssl` command when it exists (OpenSSL 3 can make
SM2 keys and SM2-with-SM3 certificates); without it those findings are None.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

import cryptography
from cryptography import x509
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers import algorithms, modes

RFC8998_SUITES = ("TLS_SM4_GCM_SM3", "TLS_SM4_CCM_SM3")


def _sm2_files(folder: Path) -> tuple[Path, Path] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    key, cert = folder / "sm2.key", folder / "sm2.crt"
    steps = ([openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2",
              "-out", str(key)],
             [openssl, "req", "-new", "-x509", "-key", str(key), "-sm3", "-subj", "/CN=sm2-probe",
              "-days", "1", "-out", str(cert)])  # fmt: skip
    for argv in steps:
        if subprocess.run(argv, capture_output=True, timeout=30).returncode != 0:
            return None
    return key, cert


def _outcome(attempt) -> str:
    try:
        attempt()
    except Exception as exc:  # the finding is the error itself
        return f"fails: {type(exc).__name__}: {exc}"
    return "works"


def _sm2_handshake(key: Path, cert: Path) -> str:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        server.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        return f"fails: cannot load the SM2 certificate: {exc}"
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cert)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server.wrap_socket(conn, server_side=True):
                    pass
            except OSError:
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            raw = socket.create_connection(listener.getsockname(), timeout=10)
            with client.wrap_socket(raw) as tls:
                return f"works: {tls.version()} {tls.cipher()[0]}"
        except OSError as exc:
            return f"fails: {exc}"
        finally:
            thread.join(10)


def probe() -> dict:
    """The findings, as a JSON-able dict."""
    key16 = b"\0" * 16
    found: dict = {
        "cryptography": cryptography.__version__,
        "cryptography_openssl": backend.openssl_version_text(),
        "python_ssl_openssl": ssl.OPENSSL_VERSION,
        "sm3": backend.hash_supported(hashes.SM3()),
        "sm4_cbc": backend.cipher_supported(algorithms.SM4(key16), modes.CBC(key16)),
        "sm4_gcm": backend.cipher_supported(algorithms.SM4(key16), modes.GCM(key16[:12])),
        "ssl_set_ciphersuites": hasattr(ssl.SSLContext, "set_ciphersuites"),
        "ssl_tls13_sm_suites": sorted(
            c["name"] for c in ssl.create_default_context().get_ciphers()
            if c["name"] in RFC8998_SUITES),
        "ssl_tls13_sm_suites_settable": _outcome(
            lambda: ssl.create_default_context().set_ciphers(":".join(RFC8998_SUITES))),
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = _sm2_files(Path(tmp))
        if files is None:
            found.update(sm2_key_in_cryptography=None, sm2_cert_in_cryptography=None,
                         sm2_tls_in_python_ssl=None)  # fmt: skip
        else:
            key, cert = files
            found["sm2_key_in_cryptography"] = _outcome(
                lambda: serialization.load_pem_private_key(key.read_bytes(), None))
            found["sm2_cert_in_cryptography"] = _outcome(
                lambda: x509.load_pem_x509_certificate(cert.read_bytes()).public_key())
            found["sm2_tls_in_python_ssl"] = _sm2_handshake(key, cert)
    openssl = shutil.which("openssl")
    if openssl:
        done = subprocess.run([openssl, "ciphers", "-s", "-tls1_3", "-ciphersuites",
                               RFC8998_SUITES[0]], capture_output=True, text=True, timeout=30)  # fmt: skip
        found["openssl_cli_tls13_sm_suite"] = ("works" if done.returncode == 0 else
                                               "fails: " + done.stderr.strip().splitlines()[0])  # fmt: skip
    return found


if __name__ == "__main__":
    print(json.dumps(probe(), indent=2))
