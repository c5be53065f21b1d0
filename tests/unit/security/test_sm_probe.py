"""The findings docs/national-crypto.md reports still hold on this machine.

If one of these fails, the platform changed (a new OpenSSL, a new `cryptography`): rerun
`python -m plait.security.smprobe` and update the document before changing the test.
"""

from __future__ import annotations

import shutil

import pytest

from plait.security.smprobe import probe


@pytest.fixture(scope="module")
def found() -> dict:
    return probe()


def test_sm3_and_sm4_are_available_through_cryptography(found):
    assert found["sm3"] and found["sm4_cbc"] and found["sm4_gcm"]


def test_python_ssl_cannot_offer_rfc_8998_cipher_suites(found):
    assert found["ssl_set_ciphersuites"] is False  # no TLS 1.3 suite selection in Python 3.11
    assert found["ssl_tls13_sm_suites"] == []
    assert found["ssl_tls13_sm_suites_settable"].startswith("fails")


def test_sm2_is_out_of_reach_of_cryptography_and_python_ssl(found):
    assert shutil.which("openssl"), "the openssl command (Debian package openssl) makes the SM2 keys"
    assert "UnsupportedAlgorithm" in found["sm2_key_in_cryptography"]
    assert "UnsupportedAlgorithm" in found["sm2_cert_in_cryptography"]
    assert found["sm2_tls_in_python_ssl"].startswith("fails")
    assert found["openssl_cli_tls13_sm_suite"].startswith("fails")
