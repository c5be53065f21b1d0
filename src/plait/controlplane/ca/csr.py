"""Checking a certificate signing request before its key gets a certificate.

The CSR contributes only its public key. The identity always comes from how the caller
authenticated; a CSR that asks for anything else (a SAN other than the caller's own
SPIFFE ID) is refused rather than silently rewritten, so a misconfigured or hostile
workload is told, and counted, instead of getting a certificate it did not ask for.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plait.core.errors import ConfigError, PlaitError

MAX_CSR_BYTES = 16 * 1024  # a P-256 CSR is ~500 bytes; an RSA-8192 one ~3 KiB
_CURVES = (ec.SECP256R1, ec.SECP384R1)
MIN_RSA_BITS = 2048


class IdentityRefused(PlaitError):
    """The CSR asks for an identity the caller does not have (HTTP 403)."""


def check_csr(pem: bytes, *, spiffe_uri: str):
    """The public key of a valid CSR for `spiffe_uri`.

    Raises ConfigError (path `csr`) for a malformed CSR, a bad signature or a weak key,
    and IdentityRefused if it names another identity.
    """
    if len(pem) > MAX_CSR_BYTES:
        raise ConfigError("csr", f"larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise ConfigError("csr", "not a PEM certificate signing request") from None
    try:
        key = csr.public_key()
    except Exception:  # unsupported algorithms raise several exception types
        raise ConfigError("csr", "public key algorithm not supported") from None
    try:
        valid = csr.is_signature_valid
    except Exception:  # a key or signature algorithm it cannot check: ValueError, Unsupported...
        raise ConfigError("csr", "signature cannot be checked (unsupported or invalid key)") from None
    if not valid:
        raise ConfigError("csr", "signature does not verify (no proof of the private key)")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise ConfigError("csr", f"curve {key.curve.name} not accepted; use P-256 or P-384")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError("csr", f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS}")
    else:
        raise ConfigError("csr", "key must be ECDSA (P-256, P-384) or RSA")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return key
    except (x509.DuplicateExtension, ValueError):
        raise ConfigError("csr", "extensions do not parse") from None
    asked = [str(name.value) for name in san]
    if asked != [spiffe_uri]:
        raise IdentityRefused(
            f"the CSR asks for {', '.join(asked) or 'an empty SAN'}; this caller may only "
            f"get {spiffe_uri}")
    return key
