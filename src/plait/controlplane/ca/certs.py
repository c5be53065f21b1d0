"""Building the mesh's certificates: roots, cross-signed roots, workload and server leaves.

Pure functions from keys and times to `x509.Certificate`s; the `Authority` decides when to
call them. Profiles follow RFC 5280 and the SPIFFE X509-SVID spec:

- root: self-signed CA, ECDSA P-256, 10 years; a subject made unique by its creation time,
  so two roots alive during a rotation never share a name (chain building relies on it).
- cross-signed root: the new root's name and key, issued by the old root, so a peer that
  still trusts only the old root verifies certificates from the new one.
- workload (SVID): empty subject, the SPIFFE ID as the only SAN (critical, as RFC 5280
  requires with an empty subject), not a CA, digitalSignature, server and client auth.
- API server: the host names and addresses the API is reached at.

A leaf never outlives the certificate that signs it.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plait.security.renewal import BACKDATE  # one value for the issuer and the renewer

ROOT_LIFETIME = datetime.timedelta(days=3650)

PublicKey = ec.EllipticCurvePublicKey
SigningKey = ec.EllipticCurvePrivateKey


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                         decipher_only=False)  # fmt: skip


def root_name(trust_domain: str, now: datetime.datetime) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
        x509.NameAttribute(NameOID.COMMON_NAME, f"Plait root CA {now:%Y-%m-%dT%H:%M:%S.%fZ}"),
    ])


def make_root(trust_domain: str, *, now: datetime.datetime) -> tuple[SigningKey, x509.Certificate]:
    """A new root key and its self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = root_name(trust_domain, now)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)  # fmt: skip
        .sign(key, hashes.SHA256())
    )
    return key, cert


def cross_sign(new_root: x509.Certificate, *, old_key: SigningKey,
               old_root: x509.Certificate, now: datetime.datetime) -> x509.Certificate:  # fmt: skip
    """`new_root`'s name and key, certified by the old root (valid as long as the old root)."""
    return (
        x509.CertificateBuilder()
        .subject_name(new_root.subject).issuer_name(old_root.subject)
        .public_key(new_root.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(old_root.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(new_root.public_key()),
                       critical=False)  # fmt: skip
        .add_extension(_aki(old_root), critical=False)
        .sign(old_key, hashes.SHA256())
    )


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())


def _leaf(public_key, *, subject: x509.Name, san: list[x509.GeneralName],
          signer_key: SigningKey, signer: x509.Certificate, now: datetime.datetime,
          lifetime: datetime.timedelta) -> x509.Certificate:  # fmt: skip
    not_after = min(now + lifetime, signer.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(signer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)  # fmt: skip
        .add_extension(x509.SubjectAlternativeName(san), critical=len(subject) == 0)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(signer), critical=False)
        .sign(signer_key, hashes.SHA256())
    )


def issue_workload(public_key, *, spiffe_uri: str, signer_key: SigningKey,
                   signer: x509.Certificate, now: datetime.datetime,
                   lifetime: datetime.timedelta) -> x509.Certificate:  # fmt: skip
    """An X.509 SVID for `spiffe_uri` with `public_key`."""
    return _leaf(public_key, subject=x509.Name([]),
                 san=[x509.UniformResourceIdentifier(spiffe_uri)], signer_key=signer_key,
                 signer=signer, now=now, lifetime=lifetime)  # fmt: skip


def issue_server(public_key, *, hosts: list[str], signer_key: SigningKey,
                 signer: x509.Certificate, now: datetime.datetime,
                 lifetime: datetime.timedelta) -> x509.Certificate:  # fmt: skip
    """A TLS server certificate for `hosts` (DNS names or IP addresses)."""
    san: list[x509.GeneralName] = []
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])])
    return _leaf(public_key, subject=subject, san=san, signer_key=signer_key, signer=signer,
                 now=now, lifetime=lifetime)  # fmt: skip
