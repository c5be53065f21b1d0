"""SPIFFE IDs as the mesh uses them: `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`.

An X.509 SVID carries its ID as the one URI subject alternative name of the leaf
certificate (SPIFFE X509-SVID spec, section 2). Parsing is strict: anything that is not
exactly that shape is a `ValueError`, so an identity can never be read loosely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

DEFAULT_TRUST_DOMAIN = "cluster.local"

# Trust domain: lower-case DNS-like name (SPIFFE ID spec, 2.1). Namespace and account:
# Kubernetes names (RFC 1123 labels / subdomains), which is what operators already use.
_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def check_trust_domain(text: str) -> str:
    if len(text) > 255 or not _DOMAIN.fullmatch(text):
        raise ValueError(f"trust domain {text!r} must be a lower-case DNS-like name")
    return text


def check_namespace(text: str) -> str:
    if len(text) > 63 or not _LABEL.fullmatch(text):
        raise ValueError(f"namespace {text!r} must be a lower-case RFC 1123 label")
    return text


def check_account(text: str) -> str:
    if len(text) > 253 or not _NAME.fullmatch(text):
        raise ValueError(f"service account {text!r} must be a lower-case RFC 1123 name")
    return text


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        check_namespace(self.namespace)
        check_account(self.service_account)

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """`spiffe://td/ns/NS/sa/SA` → SpiffeId; ValueError for anything else."""
        rest = uri.removeprefix("spiffe://")
        if rest == uri:
            raise ValueError(f"{uri!r} is not a spiffe:// URI")
        parts = rest.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise ValueError(f"{uri!r} is not of the form spiffe://DOMAIN/ns/NS/sa/ACCOUNT")
        return cls(parts[0], parts[2], parts[4])


def spiffe_uris(cert: x509.Certificate) -> list[str]:
    """Every URI SAN of `cert` (an empty list without a SAN extension)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def spiffe_id_of(cert: x509.Certificate | bytes) -> SpiffeId:
    """The SPIFFE ID of a leaf certificate (an object, or DER bytes as `ssl` gives them).

    ValueError unless the certificate has exactly one URI SAN and it is a mesh SPIFFE ID.
    """
    if isinstance(cert, bytes):
        cert = x509.load_der_x509_certificate(cert)
    uris = spiffe_uris(cert)
    if len(uris) != 1:
        raise ValueError(f"certificate has {len(uris)} URI SANs; an SVID has exactly one")
    return SpiffeId.parse(uris[0])
