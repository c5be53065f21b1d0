"""What a sidecar keeps on disk for its identity, and how it takes in the CA's answer.

Layout of an identity directory (one per sidecar; the directory should be 0700):

    key.pem     the private key, mode 0600, made here and never sent anywhere
    cert.pem    the certificate chain: the leaf first, then any intermediates
    bundle.pem  the trust bundle: every root the mesh currently trusts

The CA's answer to `POST /api/v1/ca/certificates` is JSON with `certificateChain` and
`trustBundle` (PEM) among other fields. `IdentityFiles.save` checks that the certificate
is for this directory's key and carries a SPIFFE ID before anything is written, then
replaces each file atomically, so a reload never reads a half-written file.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plait.security import keys, renewal, tls
from plait.security.files import write_file
from plait.security.spiffe import SpiffeId, spiffe_id_of

CSR_PATH = "/api/v1/ca/certificates"
BUNDLE_PATH = "/api/v1/ca/bundle"
CSR_CONTENT_TYPE = "application/pkcs10"  # the body is the PEM text of the CSR


@dataclass(frozen=True)
class IdentityFiles:
    directory: Path

    def __init__(self, directory: str | os.PathLike) -> None:
        object.__setattr__(self, "directory", Path(directory))

    @property
    def key(self) -> Path:
        return self.directory / "key.pem"

    @property
    def cert_chain(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def bundle(self) -> Path:
        return self.directory / "bundle.pem"

    def ensure_key(self) -> keys.PrivateKey:
        """Load the key, or make one (mode 0600) on first use."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.key.exists():
            return keys.load_key(self.key)
        return keys.generate_key(self.key)

    def csr(self) -> bytes:
        """A PEM CSR for this directory's key (made if missing)."""
        return keys.build_csr(self.ensure_key())

    def has_certificate(self) -> bool:
        return self.cert_chain.exists() and self.bundle.exists()

    def certificate(self) -> x509.Certificate:
        """The leaf certificate currently on disk."""
        return x509.load_pem_x509_certificates(self.cert_chain.read_bytes())[0]

    def spiffe_id(self) -> SpiffeId:
        return spiffe_id_of(self.certificate())

    def seconds_until_renewal(self) -> float:
        """0 when there is no certificate yet or it is past half its lifetime."""
        if not self.has_certificate():
            return 0.0
        return renewal.seconds_until_renewal(self.certificate())

    def save(self, answer: dict[str, Any]) -> SpiffeId:
        """Check and store the CA's JSON answer; returns the identity it grants.

        ValueError if the answer is malformed, the certificate is not for this key, or it
        carries no SPIFFE ID. Nothing is written then.
        """
        try:
            chain_pem = str(answer["certificateChain"]).encode()
            bundle_pem = str(answer["trustBundle"]).encode()
            chain = x509.load_pem_x509_certificates(chain_pem)
            x509.load_pem_x509_certificates(bundle_pem)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the CA's answer is not a certificate and bundle: {exc}") from None
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        mine = self.ensure_key().public_key().public_bytes(der, public)
        if chain[0].public_key().public_bytes(der, public) != mine:
            raise ValueError("the certificate is not for this identity's key")
        identity = spiffe_id_of(chain[0])
        write_file(self.bundle, bundle_pem)
        write_file(self.cert_chain, chain_pem)
        return identity

    def client_context(self) -> ssl.SSLContext:
        return tls.client_context(cert_chain=self.cert_chain, key=self.key, bundle=self.bundle)

    def server_context(self) -> tls.ReloadingServerContext:
        return tls.ReloadingServerContext(cert_chain=self.cert_chain, key=self.key,
                                          bundle=self.bundle)  # fmt: skip
