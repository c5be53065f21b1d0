"""SPIFFE IDs, keys and CSRs, 0600 files, the identity directory, renewal at half life."""

from __future__ import annotations

import datetime
import stat

import pytest
from cryptography import x509

from plait.controlplane.ca.certs import issue_workload, make_root
from plait.security import keys, renewal
from plait.security.spiffe import SpiffeId, spiffe_id_of
from plait.security.workload import IdentityFiles
from plait.testing.tls import enroll

UTC = datetime.timezone.utc


def test_spiffe_ids_parse_strictly():
    sid = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/reviews")
    assert (sid.trust_domain, sid.namespace, sid.service_account) == ("cluster.local", "shop", "reviews")
    assert str(sid) == "spiffe://cluster.local/ns/shop/sa/reviews"
    for bad in ("http://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b/c",
                "spiffe://cluster.local/ns/a/x/b", "spiffe://Cluster.local/ns/a/sa/b",
                "spiffe://cluster.local/ns//sa/b", "spiffe://cluster.local/ns/a/sa/B"):
        with pytest.raises(ValueError):
            SpiffeId.parse(bad)


def test_keys_are_private_files_and_csrs_prove_possession(tmp_path):
    path = tmp_path / "k" / "key.pem"
    key = keys.generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load_key(path).private_numbers() == key.private_numbers()
    csr = x509.load_pem_x509_csr(keys.build_csr(key))
    assert csr.is_signature_valid and csr.public_key() == key.public_key()
    with pytest.raises(x509.ExtensionNotFound):
        csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_identity_files_take_the_cas_answer(mesh_ca, tmp_path):
    files = enroll(mesh_ca, tmp_path / "id", "reviews")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    assert files.spiffe_id() == SpiffeId("cluster.local", "default", "reviews")
    assert 11 * 3600 < files.seconds_until_renewal() <= 12 * 3600 + 300


def test_identity_files_refuse_a_certificate_for_another_key(mesh_ca, tmp_path):
    theirs = enroll(mesh_ca, tmp_path / "theirs", "reviews")
    mine = IdentityFiles(tmp_path / "mine")
    mine.ensure_key()
    answer = {"certificateChain": theirs.cert_chain.read_text(), "trustBundle": theirs.bundle.read_text()}
    with pytest.raises(ValueError, match="not for this identity's key"):
        mine.save(answer)
    with pytest.raises(ValueError, match="not a certificate"):
        mine.save({"certificateChain": "junk", "trustBundle": ""})
    assert not mine.has_certificate()


def test_renewal_is_due_at_half_life():
    now = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    root_key, root = make_root("cluster.local", now=now)
    leaf = issue_workload(keys.new_key().public_key(), spiffe_uri="spiffe://cluster.local/ns/a/sa/b",
                          signer_key=root_key, signer=root, now=now, lifetime=datetime.timedelta(hours=24))
    # half way through the lifetime counted from the issue time, not the backdated start
    assert leaf.not_valid_before_utc == now - renewal.BACKDATE
    assert renewal.renew_at(leaf) == now + datetime.timedelta(hours=12)
    assert not renewal.needs_renewal(leaf, now=renewal.renew_at(leaf) - datetime.timedelta(seconds=1))
    assert renewal.needs_renewal(leaf, now=renewal.renew_at(leaf))
    assert renewal.seconds_until_renewal(leaf, now=now + datetime.timedelta(days=2)) == 0.0
    assert spiffe_id_of(leaf) == SpiffeId("cluster.local", "a", "b")


def test_a_short_lived_certificate_is_not_due_the_moment_it_arrives():
    now = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    root_key, root = make_root("cluster.local", now=now)
    leaf = issue_workload(keys.new_key().public_key(), spiffe_uri="spiffe://cluster.local/ns/a/sa/b",
                          signer_key=root_key, signer=root, now=now,
                          lifetime=datetime.timedelta(seconds=20))
    assert renewal.renew_at(leaf) == now + datetime.timedelta(seconds=10)
    assert not renewal.needs_renewal(leaf, now=now)
