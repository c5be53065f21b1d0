"""SM3 and SM4 against their published test vectors, and the sealed-message helpers."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from plait.security import sm

SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")


def test_sm3_vectors_of_gbt_32905():
    # GB/T 32905-2016, appendix A, examples 1 and 2.
    assert sm.sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert sm.sm3(b"abcd" * 16).hex() == "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"


def test_sm4_vectors_of_gbt_32907():
    # GB/T 32907-2016, appendix A: one block, then the same block encrypted 1,000,000 times.
    enc = Cipher(algorithms.SM4(SM4_KEY), modes.ECB()).encryptor()
    block = enc.update(SM4_KEY)
    assert block.hex() == "681edf34d206965e86b3e94f536e4246"
    for _ in range(999_999):
        block = enc.update(block)
    assert block.hex() == "595298c7c6fd271f0402f804c33d3f66"


def test_sm4_gcm_vector_of_rfc_8998():
    # RFC 8998, appendix A.1 (SM4-GCM).
    nonce = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    plain = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
                          "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA")
    cipher = bytes.fromhex("17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
                           "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D")
    tag = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")
    assert sm.sm4_gcm_decrypt(SM4_KEY, nonce + cipher + tag, aad=aad) == plain


def test_sm4_gcm_round_trip_and_tampering():
    key = sm.new_key()
    sealed = sm.sm4_gcm_encrypt(key, b"hello mesh", aad=b"hdr")
    assert sm.sm4_gcm_decrypt(key, sealed, aad=b"hdr") == b"hello mesh"
    assert sm.sm4_gcm_encrypt(key, b"hello mesh", aad=b"hdr") != sealed  # fresh nonce
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for bad, aad in ((flipped, b"hdr"), (sealed, b"other"), (sealed[:20], b"hdr")):
        with pytest.raises(sm.DecryptError):
            sm.sm4_gcm_decrypt(key, bad, aad=aad)
    with pytest.raises(sm.DecryptError):
        sm.sm4_gcm_decrypt(sm.new_key(), sealed, aad=b"hdr")
    with pytest.raises(ValueError, match="16 bytes"):
        sm.sm4_gcm_encrypt(b"short", b"")


def test_sm4_cbc_round_trip_and_malformed_input():
    key = sm.new_key()
    for size in (0, 1, 15, 16, 17, 100):
        data = bytes(range(size % 256)) * 1
        assert sm.sm4_cbc_decrypt(key, sm.sm4_cbc_encrypt(key, data)) == data
    sealed = sm.sm4_cbc_encrypt(key, b"x" * 20)
    for bad in (sealed[:-1], sealed[:16], b""):
        with pytest.raises(sm.DecryptError):
            sm.sm4_cbc_decrypt(key, bad)


def test_hmac_sm3_known_answer():
    # RFC 2104 construction over SM3, checked against the hash directly.
    key, msg = b"k" * 16, b"message"
    inner = sm.sm3(bytes(b ^ 0x36 for b in key.ljust(64, b"\0")) + msg)
    outer = sm.sm3(bytes(b ^ 0x5C for b in key.ljust(64, b"\0")) + inner)
    assert sm.hmac_sm3(key, msg) == outer
