"""SM3 and SM4, the Chinese national hash and block cipher (GB/T 32905, GB/T 32907).

Both come from `cryptography`, i.e. from OpenSSL's implementations; nothing here is a
cipher of our own. SM2 (signatures, key exchange) is absent on purpose: no maintained,
sound Python library offers it here; docs/national-crypto.md says why and what works.

- `sm3(data)`, `hmac_sm3(key, data)`: 32-byte digests.
- `sm4_gcm_encrypt` / `sm4_gcm_decrypt`: authenticated encryption (RFC 8998 uses SM4-GCM
  in TLS 1.3). A fresh random 12-byte nonce is made per message and put in front of the
  ciphertext; the 16-byte tag follows it. Prefer this.
- `sm4_cbc_encrypt` / `sm4_cbc_decrypt`: CBC with PKCS#7 padding, for systems that
  require it. CBC is not authenticated: pair it with `hmac_sm3` (encrypt, then MAC).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_SIZE = 16  # SM4 has 128-bit keys and blocks
BLOCK_SIZE = 16
GCM_NONCE_SIZE = 12  # the size RFC 8998 and NIST SP 800-38D recommend
GCM_TAG_SIZE = 16


class DecryptError(ValueError):
    """The ciphertext was tampered with, truncated, or made with another key."""


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) with SM3, as GB/T 15852.2 and TLCP use it."""
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"an SM4 key is {KEY_SIZE} bytes, not {len(key)}")


def new_key() -> bytes:
    return os.urandom(KEY_SIZE)


def sm4_gcm_encrypt(key: bytes, plaintext: bytes, *, aad: bytes = b"") -> bytes:
    """nonce (12) || ciphertext || tag (16)."""
    _check_key(key)
    nonce = os.urandom(GCM_NONCE_SIZE)
    enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(aad)
    body = enc.update(plaintext) + enc.finalize()
    return nonce + body + enc.tag


def sm4_gcm_decrypt(key: bytes, sealed: bytes, *, aad: bytes = b"") -> bytes:
    """The plaintext of `sm4_gcm_encrypt`'s output; DecryptError if it does not verify."""
    _check_key(key)
    if len(sealed) < GCM_NONCE_SIZE + GCM_TAG_SIZE:
        raise DecryptError("SM4-GCM message shorter than its nonce and tag")
    nonce, tag = sealed[:GCM_NONCE_SIZE], sealed[-GCM_TAG_SIZE:]
    body = sealed[GCM_NONCE_SIZE:-GCM_TAG_SIZE]
    dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
    dec.authenticate_additional_data(aad)
    try:
        return dec.update(body) + dec.finalize()
    except InvalidTag:
        raise DecryptError("SM4-GCM tag does not verify") from None


def sm4_cbc_encrypt(key: bytes, plaintext: bytes) -> bytes:
    """iv (16) || ciphertext, PKCS#7-padded. Not authenticated (see the module note)."""
    _check_key(key)
    iv = os.urandom(BLOCK_SIZE)
    padder = padding.PKCS7(BLOCK_SIZE * 8).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.SM4(key), modes.CBC(iv)).encryptor()
    return iv + enc.update(padded) + enc.finalize()


def sm4_cbc_decrypt(key: bytes, data: bytes) -> bytes:
    """The plaintext of `sm4_cbc_encrypt`'s output; DecryptError for a malformed input."""
    _check_key(key)
    if len(data) < 2 * BLOCK_SIZE or len(data) % BLOCK_SIZE:
        raise DecryptError("SM4-CBC message is not an IV and whole blocks")
    dec = Cipher(algorithms.SM4(key), modes.CBC(data[:BLOCK_SIZE])).decryptor()
    padded = dec.update(data[BLOCK_SIZE:]) + dec.finalize()
    unpadder = padding.PKCS7(BLOCK_SIZE * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptError("SM4-CBC padding is invalid") from None
