"""A workload's key pair and its certificate signing request.

The private key is made where it is used (the sidecar) and never leaves it: only the CSR,
which carries the public key and a signature proving possession, goes to the CA. Keys are
ECDSA P-256, the curve every TLS stack verifies fast and what SPIRE and Istio default to.
"""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plait.security.files import write_private
from plait.security.spiffe import SpiffeId

PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file's mode (0600) is what protects it."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def generate_key(path: str | os.PathLike) -> PrivateKey:
    """Make a new P-256 key and write it to `path` with mode 0600 (atomically)."""
    key = new_key()
    write_private(path, key_pem(key))
    return key


def load_key(path: str | os.PathLike) -> PrivateKey:
    """Read a PEM private key. ValueError if it is not an EC key (or not a key at all)."""
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{os.fspath(path)} does not hold an EC private key")
    return key


def build_csr(key: PrivateKey, spiffe_id: SpiffeId | None = None) -> bytes:
    """A PEM CSR for `key`. The CA takes the identity from how the caller authenticated,
    not from the CSR; `spiffe_id`, if given, must be the caller's own or the CA refuses."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plait workload")]))
    if spiffe_id is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(spiffe_id.uri)]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)
