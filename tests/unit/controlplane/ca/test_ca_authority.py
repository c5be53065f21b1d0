"""The mesh CA: CSR checks, what a workload certificate holds, persistence, rotation."""

from __future__ import annotations

import datetime
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plait.core.errors import ConfigError, PlaitError
from plait.controlplane.ca import Authority, IdentityRefused, check_csr
from plait.controlplane.store import ConflictError
from plait.security import keys
from plait.security.spiffe import SpiffeId

UTC = datetime.timezone.utc
ME = "spiffe://cluster.local/ns/default/sa/reviews"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


def csr_with(key, *sans: x509.GeneralName) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_a_csr_gives_only_its_key_and_may_name_only_the_callers_identity():
    key = keys.new_key()
    assert check_csr(keys.build_csr(key), spiffe_uri=ME) == key.public_key()
    assert check_csr(keys.build_csr(key, SpiffeId.parse(ME)), spiffe_uri=ME) == key.public_key()
    other = x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/admin")
    for sans in ((other,), (x509.UniformResourceIdentifier(ME), other), (x509.DNSName("evil"),)):
        with pytest.raises(IdentityRefused, match="may only get " + ME):
            check_csr(csr_with(key, *sans), spiffe_uri=ME)


@pytest.mark.parametrize("pem, reason", [
    (b"not a csr", "not a PEM certificate signing request"),
    (b"x" * 20000, "larger than"),
])
def test_malformed_csrs_are_refused_with_a_reason(pem, reason):
    with pytest.raises(ConfigError, match=reason) as err:
        check_csr(pem, spiffe_uri=ME)
    assert err.value.path == "csr"


def test_a_public_key_off_its_curve_is_refused_with_a_reason():
    # cryptography raises ValueError("Invalid key") from the signature check itself for
    # such a key; the check must turn that into the CSR's refusal, not a crash.
    key = ec.generate_private_key(ec.SECP256R1())
    der = bytearray(x509.load_pem_x509_csr(csr_with(key)).public_bytes(serialization.Encoding.DER))
    point = key.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)
    der[bytes(der).find(point) + 10] ^= 0xFF  # a coordinate changed: no longer on P-256
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ConfigError) as err:
        check_csr(pem, spiffe_uri=ME)
    assert err.value.path == "csr"


def test_weak_or_odd_keys_are_refused():
    with pytest.raises(ConfigError, match="at least 2048"):
        check_csr(csr_with(rsa.generate_private_key(65537, 1024)), spiffe_uri=ME)
    with pytest.raises(ConfigError, match="curve secp256k1"):
        check_csr(csr_with(ec.generate_private_key(ec.SECP256K1())), spiffe_uri=ME)
    good = keys.build_csr(keys.new_key())
    der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
    forged = bytearray(der)
    forged[-5] ^= 0xFF  # inside the signature
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + __import__("base64").encodebytes(bytes(forged)) \
        + b"-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(ConfigError):
        check_csr(pem, spiffe_uri=ME)


def test_a_workload_certificate_is_an_svid(tmp_path):
    ca = Authority.open(tmp_path, trust_domain="cluster.local")
    key = keys.new_key()
    issued = ca.issue_workload(key.public_key(), spiffe_uri=ME)
    cert = issued.cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [ME]
    assert len(list(san.value)) == 1 and len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.public_key() == key.public_key()
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(hours=24) <= lifetime <= datetime.timedelta(hours=24, minutes=5)
    assert issued.chain == [cert] and issued.bundle == ca.bundle
    cert.verify_directly_issued_by(ca.bundle[0])


def test_the_root_is_made_once_with_a_private_key_file(tmp_path):
    ca = Authority.open(tmp_path, trust_domain="cluster.local")
    key_file = tmp_path / "ca" / "roots" / "1" / "key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    root = ca.bundle[0]
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"
    again = Authority.open(tmp_path, trust_domain="cluster.local")
    assert again.bundle == [root]
    assert (tmp_path / "ca" / "bundle.pem").read_bytes() == root.public_bytes(serialization.Encoding.PEM)


def test_rotation_state_survives_a_restart_and_ends_after_the_overlap(tmp_path):
    clock = Clock()
    ca = Authority.open(tmp_path, trust_domain="cluster.local", cert_ttl=datetime.timedelta(hours=1),
                        now=clock)
    first = ca.bundle[0]
    ca.rotate()
    with pytest.raises(ConflictError, match="in progress"):
        ca.rotate()
    ca = Authority.open(tmp_path, trust_domain="cluster.local", cert_ttl=datetime.timedelta(hours=1),
                        now=clock)
    assert len(ca.bundle) == 2 and ca.bundle[1] == first
    assert ca.status()["rotation"] is not None
    assert [r["role"] for r in ca.status()["roots"]] == ["active", "retiring"]
    clock.now += datetime.timedelta(minutes=59)
    assert not ca.tick()
    clock.now += datetime.timedelta(minutes=2)
    assert ca.tick()
    assert ca.bundle != [first] and len(ca.bundle) == 1
    assert not (tmp_path / "ca" / "roots" / "1").exists()  # the old key is gone
    with pytest.raises(ConflictError, match="no root rotation"):
        ca.finish()


def test_manual_overlap_waits_for_finish(tmp_path):
    clock = Clock()
    ca = Authority.open(tmp_path, trust_domain="cluster.local", auto_finish=False, now=clock)
    ca.rotate()
    clock.now += datetime.timedelta(days=400)
    assert not ca.tick() and len(ca.bundle) == 2
    assert ca.status()["rotation"] == {"overlapUntil": None}
    ca.finish()
    assert len(ca.bundle) == 1


def test_operator_ca_files_are_checked(tmp_path):
    ca = Authority.open(tmp_path / "a", trust_domain="cluster.local")
    cert_file = tmp_path / "a" / "ca" / "roots" / "1" / "cert.pem"
    other_key = tmp_path / "other.key"
    other_key.write_bytes(keys.key_pem(keys.new_key()))
    with pytest.raises(PlaitError, match="is not the key of"):
        Authority.open(tmp_path / "b", trust_domain="cluster.local", ca_cert=str(cert_file),
                       ca_key=str(other_key))
    with pytest.raises(PlaitError, match="both --ca-cert and --ca-key"):
        Authority.open(tmp_path / "b", trust_domain="cluster.local", ca_cert=str(cert_file))
    with pytest.raises(PlaitError, match="cannot load"):
        Authority.open(tmp_path / "b", trust_domain="cluster.local", ca_cert=str(other_key),
                       ca_key=str(other_key))
    leaf = tmp_path / "leaf.pem"
    leaf_key = keys.new_key()
    leaf.write_bytes(ca.issue_workload(leaf_key.public_key(), spiffe_uri=ME).chain_pem.encode())
    leaf_key_file = tmp_path / "leaf.key"
    leaf_key_file.write_bytes(keys.key_pem(leaf_key))
    with pytest.raises(PlaitError, match="not a CA certificate"):
        Authority.open(tmp_path / "b", trust_domain="cluster.local", ca_cert=str(leaf),
                       ca_key=str(leaf_key_file))
