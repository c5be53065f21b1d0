"""mTLS contexts from `plait.security.tls` in real handshakes over 127.0.0.1: who is
accepted, who is refused, and what each side learns about the other."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plait.controlplane.ca import Authority
from plait.controlplane.ca.certs import make_root
from plait.security import tls
from plait.security.spiffe import SpiffeId
from plait.security.workload import IdentityFiles
from plait.testing.tls import enroll, handshake

REVIEWS = SpiffeId("cluster.local", "default", "reviews")
RATINGS = SpiffeId("cluster.local", "default", "ratings")


def server_of(files: IdentityFiles, *, bundle=None):
    return tls.server_context(cert_chain=files.cert_chain, key=files.key, bundle=bundle or files.bundle)


def client_of(files: IdentityFiles, *, bundle=None):
    return tls.client_context(cert_chain=files.cert_chain, key=files.key, bundle=bundle or files.bundle)


def test_two_workloads_of_the_mesh_see_each_others_spiffe_ids(mesh_ca, tmp_path):
    server, client = enroll(mesh_ca, tmp_path / "s", "reviews"), enroll(mesh_ca, tmp_path / "c", "ratings")
    result = handshake(server_of(server), client_of(client))
    assert result.ok, (result.server_error, result.client_error)
    assert (result.server_saw, result.client_saw) == (RATINGS, REVIEWS)
    assert result.version == "TLSv1.3"


def test_a_client_certificate_from_another_ca_is_refused(mesh_ca, tmp_path, clock):
    # Same trust domain, same names: only the signing root differs.
    other = Authority.open(tmp_path / "other", trust_domain="cluster.local", now=clock)
    server = enroll(mesh_ca, tmp_path / "s", "reviews")
    intruder = enroll(other, tmp_path / "i", "ratings")
    result = handshake(server_of(server), client_of(intruder, bundle=server.bundle))
    assert result.server_saw is None
    assert "certificate verify failed" in str(result.server_error)
    assert result.client_error is not None


def test_a_server_certificate_from_another_ca_is_refused(mesh_ca, tmp_path, clock):
    other = Authority.open(tmp_path / "other", trust_domain="cluster.local", now=clock)
    impostor = enroll(other, tmp_path / "s", "reviews")
    client = enroll(mesh_ca, tmp_path / "c", "ratings")
    result = handshake(server_of(impostor, bundle=client.bundle), client_of(client))
    assert result.client_saw is None
    assert "certificate verify failed" in str(result.client_error)


def test_a_client_without_a_certificate_is_refused(mesh_ca, tmp_path):
    import ssl

    server = enroll(mesh_ca, tmp_path / "s", "reviews")
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(server.bundle)
    result = handshake(server_of(server), bare)
    assert result.server_saw is None and result.server_error is not None


def test_require_peer_checks_the_identity(mesh_ca, tmp_path):
    import socket
    import threading

    server, client = enroll(mesh_ca, tmp_path / "s", "reviews"), enroll(mesh_ca, tmp_path / "c", "ratings")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve():
            conn, _ = listener.accept()
            with server_of(server).wrap_socket(conn, server_side=True) as t:
                t.recv(1)
        thread = threading.Thread(target=serve)
        thread.start()
        with client_of(client).wrap_socket(socket.create_connection(listener.getsockname())) as t:
            assert tls.require_peer(t, [REVIEWS]) == REVIEWS
            with pytest.raises(tls.PeerRejected, match="not allowed"):
                tls.require_peer(t, [RATINGS])
            t.send(b"x")
        thread.join(10)


def test_root_rotation_overlap_then_finish(mesh_ca, tmp_path, clock):
    old_cert = enroll(mesh_ca, tmp_path / "old", "reviews")  # signed by the first root
    old_bundle_only = tmp_path / "old-bundle.pem"
    old_bundle_only.write_bytes(old_cert.bundle.read_bytes())
    mesh_ca.rotate()
    new_cert = enroll(mesh_ca, tmp_path / "new", "ratings")  # signed by the new root
    both = new_cert.bundle
    assert len(x509.load_pem_x509_certificates(both.read_bytes())) == 2

    # During the overlap, certificates of either root verify against the bundle...
    assert handshake(server_of(old_cert, bundle=both), client_of(new_cert)).ok
    assert handshake(server_of(new_cert), client_of(old_cert, bundle=both)).ok
    # ... and a peer still holding only the old bundle accepts the new root's certificate
    # through the cross-signed root that rides in its chain.
    assert handshake(server_of(new_cert, bundle=old_bundle_only),
                     client_of(old_cert, bundle=old_bundle_only)).ok

    mesh_ca.finish()
    renewed = enroll(mesh_ca, tmp_path / "renewed", "details")
    only_new = renewed.bundle
    assert len(x509.load_pem_x509_certificates(only_new.read_bytes())) == 1
    assert handshake(server_of(renewed), client_of(new_cert, bundle=only_new)).ok
    refused = handshake(server_of(renewed), client_of(old_cert, bundle=only_new))
    assert refused.server_saw is None and "certificate verify failed" in str(refused.server_error)
    refused = handshake(server_of(old_cert, bundle=only_new), client_of(renewed))
    assert "certificate verify failed" in str(refused.client_error)


def _intermediate(tmp_path):
    """An operator's root and an intermediate CA under it, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, root = make_root("example.org", now=now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "operator intermediate")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_file = tmp_path / "int.key"
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return root, cert, key_file


@pytest.mark.parametrize("with_root", [True, False], ids=["intermediate+root", "intermediate-only"])
def test_an_operator_intermediate_ca_issues_chains_that_verify(tmp_path, with_root):
    root, inter, key_file = _intermediate(tmp_path)
    pem = serialization.Encoding.PEM
    cert_file = tmp_path / "int.pem"
    cert_file.write_bytes(inter.public_bytes(pem) + (root.public_bytes(pem) if with_root else b""))
    ca = Authority.open(tmp_path / "cp", trust_domain="cluster.local", ca_cert=str(cert_file),
                        ca_key=str(key_file))
    assert ca.bundle == ([root] if with_root else [inter])
    a, b = enroll(ca, tmp_path / "a", "reviews"), enroll(ca, tmp_path / "b", "ratings")
    chain = x509.load_pem_x509_certificates(a.cert_chain.read_bytes())
    assert chain[1] == inter and len(chain) == 2
    result = handshake(server_of(a), client_of(b))
    assert result.ok and result.client_saw == REVIEWS and result.server_saw == RATINGS
    with pytest.raises(Exception, match="operator"):
        ca.rotate()


def test_a_reloading_server_presents_a_renewed_certificate_on_the_next_handshake(mesh_ca, tmp_path):
    server = enroll(mesh_ca, tmp_path / "s", "reviews")
    client = enroll(mesh_ca, tmp_path / "c", "ratings")
    reloading = server.server_context()
    assert handshake(reloading.context, client_of(client)).client_saw == REVIEWS
    enroll(mesh_ca, tmp_path / "s", "details")  # same key, new certificate on disk
    assert handshake(reloading.context, client_of(client)).client_saw == REVIEWS
    reloading.reload()
    assert handshake(reloading.context, client_of(client)).client_saw == SpiffeId(
        "cluster.local", "default", "details")
