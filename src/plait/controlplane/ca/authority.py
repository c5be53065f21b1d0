"""The mesh CA: its roots on disk, workload certificates from CSRs, and root rotation.

Where the signing material comes from:
- generated (default): on first start a root (ECDSA P-256) is made in `<data-dir>/ca/`,
  its key written with mode 0600, and reused on every later start;
- the operator's (`--ca-cert`, `--ca-key`): a root or an intermediate. The cert file holds
  the signing certificate first, then optionally its chain. Self-signed certificates in
  it form the trust bundle; without one, the top certificate of the file anchors the mesh
  (verifiers in `plait.security.tls` accept any bundle certificate as an anchor).
  Issued chains carry the signing certificate and the intermediates above it.

Rotation (generated roots only): `rotate()` makes a new root and signs with it at once;
the bundle holds both roots, and the new root cross-signed by the old one rides in every
new chain, so a peer that has not yet fetched the new bundle still verifies new
certificates. `finish()` (by the operator, or `tick()` once the overlap has passed) drops
the old root and its key: certificates it signed stop verifying. The overlap defaults to
the workload certificate lifetime, so by then every old certificate has been renewed.

Disk layout (`ca/` is 0700): `roots/N/cert.pem`, `roots/N/key.pem` (0600), `roots/N/cross.pem`,
`state.json` (`{"active": N, "retiring": M or null, "overlapUntil": unix time or null}`),
and `bundle.pem`, the current trust bundle for operators and scripts.
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plait.core.errors import PlaitError
from plait.controlplane.ca import certs
from plait.controlplane.store.base import ConflictError
from plait.security.files import write_file, write_private

UTC = datetime.timezone.utc
DEFAULT_CERT_TTL = datetime.timedelta(hours=24)
PEM = serialization.Encoding.PEM


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def _pem(*items: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(PEM) for c in items)


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True, slots=True)
class Issued:
    cert: x509.Certificate
    chain: list[x509.Certificate]  # the leaf first
    bundle: list[x509.Certificate]

    @property
    def chain_pem(self) -> str:
        return _pem(*self.chain).decode()

    @property
    def bundle_pem(self) -> str:
        return _pem(*self.bundle).decode()


@dataclass(slots=True)
class _Root:
    ident: str
    cert: x509.Certificate
    key: object | None  # None once retired
    cross: x509.Certificate | None = None


class Authority:
    """Open with `Authority.open(...)`. Not thread-safe; the control plane's event loop
    is its only caller."""

    def __init__(self, *, directory: Path, trust_domain: str, cert_ttl: datetime.timedelta,
                 overlap: datetime.timedelta | None,
                 now: Callable[[], datetime.datetime]) -> None:  # fmt: skip
        self.directory = directory
        self.trust_domain = trust_domain
        self.cert_ttl = cert_ttl
        self.overlap = overlap  # None: only the operator finishes a rotation
        self._now = now
        self.operator_provided = False
        self._signer_key = None
        self._signer: x509.Certificate | None = None
        self._intermediates: list[x509.Certificate] = []  # above the signer, for chains
        self._bundle: list[x509.Certificate] = []
        self._active: _Root | None = None
        self._retiring: _Root | None = None
        self._overlap_until: float | None = None
        self._subscribers: list[Callable[[], None]] = []

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str | Path, *, trust_domain: str,
             cert_ttl: datetime.timedelta = DEFAULT_CERT_TTL,
             overlap: datetime.timedelta | None = None, auto_finish: bool = True,
             ca_cert: str | None = None, ca_key: str | None = None,
             now: Callable[[], datetime.datetime] = _utcnow) -> Authority:  # fmt: skip
        """The CA of `data_dir`: the operator's if `ca_cert`/`ca_key` are given, else the
        generated root (made on first use). A rotation's overlap is `overlap`, or
        `cert_ttl` when None; with `auto_finish` False only `finish()` ends it.

        Raises PlaitError for unreadable or inconsistent CA files.
        """
        directory = Path(data_dir) / "ca"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca = cls(directory=directory, trust_domain=trust_domain, cert_ttl=cert_ttl,
                 overlap=(overlap or cert_ttl) if auto_finish else None, now=now)  # fmt: skip
        if bool(ca_cert) != bool(ca_key):
            raise PlaitError("give both --ca-cert and --ca-key, or neither")
        if ca_cert and ca_key:
            ca._load_operator(Path(ca_cert), Path(ca_key))
        else:
            ca._load_generated()
        ca._publish()
        return ca

    def _load_operator(self, cert_path: Path, key_path: Path) -> None:
        try:
            chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise PlaitError(f"cannot load the CA from {cert_path} and {key_path}: {exc}") from None
        signer = chain[0]
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise PlaitError(f"{key_path}: the CA key must be ECDSA or RSA")
        if key.public_key().public_numbers() != signer.public_key().public_numbers():
            raise PlaitError(f"{key_path} is not the key of the first certificate in {cert_path}")
        try:
            constraints = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise PlaitError(f"{cert_path}: the first certificate is not a CA certificate")
        self.operator_provided = True
        self._signer_key, self._signer = key, signer
        self._intermediates = [c for c in chain[1:] if not _self_signed(c)]
        roots = [c for c in chain if _self_signed(c)]
        self._bundle = roots or [chain[-1]]

    def _load_generated(self) -> None:
        state_file = self.directory / "state.json"
        if not state_file.exists():
            self._active = self._new_root("1")
            self._save_state()
        else:
            try:
                state = json.loads(state_file.read_text())
                self._active = self._read_root(str(state["active"]))
                if state.get("retiring"):
                    self._retiring = self._read_root(str(state["retiring"]))
                    self._overlap_until = float(state["overlapUntil"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise PlaitError(f"cannot load the mesh CA from {self.directory}: {exc}") from None
        self._select_generated()

    def _new_root(self, ident: str) -> _Root:
        key, cert = certs.make_root(self.trust_domain, now=self._now())
        folder = self.directory / "roots" / ident
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(folder / "key.pem", key.private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        write_file(folder / "cert.pem", _pem(cert))
        return _Root(ident, cert, key)

    def _read_root(self, ident: str) -> _Root:
        folder = self.directory / "roots" / ident
        cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
        cross_file = folder / "cross.pem"
        cross = None
        if cross_file.exists():
            cross = x509.load_pem_x509_certificate(cross_file.read_bytes())
        return _Root(ident, cert, key, cross)

    def _select_generated(self) -> None:
        assert self._active is not None
        self._signer_key, self._signer = self._active.key, self._active.cert
        during = self._retiring is not None and self._active.cross is not None
        self._intermediates = [self._active.cross] if during else []
        self._bundle = [self._active.cert] + ([self._retiring.cert] if self._retiring else [])

    def _save_state(self) -> None:
        assert self._active is not None
        state = {"active": self._active.ident,
                 "retiring": self._retiring.ident if self._retiring else None,
                 "overlapUntil": self._overlap_until}  # fmt: skip
        write_file(self.directory / "state.json", json.dumps(state).encode(), mode=0o600)

    def _publish(self) -> None:
        write_file(self.directory / "bundle.pem", _pem(*self._bundle))
        for callback in list(self._subscribers):
            callback()

    # --- issuing ----------------------------------------------------------------------

    @property
    def bundle(self) -> list[x509.Certificate]:
        return list(self._bundle)

    @property
    def bundle_pem(self) -> str:
        return _pem(*self._bundle).decode()

    def issue_workload(self, public_key, *, spiffe_uri: str) -> Issued:
        """An SVID for `spiffe_uri`, valid for the configured lifetime (at most as long as
        the signing certificate)."""
        cert = certs.issue_workload(public_key, spiffe_uri=spiffe_uri, signer_key=self._signer_key,
                                    signer=self._signer, now=self._now(), lifetime=self.cert_ttl)  # fmt: skip
        return self._issued(cert)

    def issue_server(self, public_key, *, hosts: list[str]) -> Issued:
        cert = certs.issue_server(public_key, hosts=hosts, signer_key=self._signer_key,
                                  signer=self._signer, now=self._now(), lifetime=self.cert_ttl)  # fmt: skip
        return self._issued(cert)

    def _issued(self, cert: x509.Certificate) -> Issued:
        signer_chain = [] if _self_signed(self._signer) else [self._signer]
        return Issued(cert, [cert, *signer_chain, *self._intermediates], self.bundle)

    # --- rotation ---------------------------------------------------------------------

    def rotate(self) -> dict:
        """Start a rotation: a new root signs from now on; both roots are trusted.

        ConflictError with an operator-provided CA or while a rotation is in progress.
        """
        if self.operator_provided:
            raise ConflictError("the CA is the operator's (--ca-cert); rotate it by "
                                "restarting with the new CA")
        if self._retiring is not None:
            raise ConflictError("a rotation is in progress; finish it first "
                                "(plait ca rotate --finish)")
        assert self._active is not None
        old = self._active
        new = self._new_root(str(int(old.ident) + 1))
        new.cross = certs.cross_sign(new.cert, old_key=old.key, old_root=old.cert, now=self._now())
        write_file(self.directory / "roots" / new.ident / "cross.pem", _pem(new.cross))
        self._active, self._retiring = new, old
        self._overlap_until = None
        if self.overlap is not None:
            self._overlap_until = (self._now() + self.overlap).timestamp()
        self._save_state()
        self._select_generated()
        self._publish()
        return self.status()

    def finish(self) -> dict:
        """End the rotation: the old root leaves the bundle and its key is deleted.

        ConflictError when no rotation is in progress."""
        if self._retiring is None:
            raise ConflictError("no root rotation is in progress")
        old = self._retiring
        self._retiring, self._overlap_until = None, None
        self._save_state()
        shutil.rmtree(self.directory / "roots" / old.ident, ignore_errors=True)
        assert self._active is not None
        self._active.cross = None
        (self.directory / "roots" / self._active.ident / "cross.pem").unlink(missing_ok=True)
        self._select_generated()
        self._publish()
        return self.status()

    def tick(self) -> bool:
        """Finish a rotation whose overlap has passed; True if it did."""
        if self._overlap_until is None or self._now().timestamp() < self._overlap_until:
            return False
        self.finish()
        return True

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever the trust bundle or the signing root changes."""
        self._subscribers.append(callback)

    def status(self) -> dict:
        def root(cert: x509.Certificate, role: str) -> dict:
            return {"role": role, "subject": cert.subject.rfc4514_string(),
                    "sha256": fingerprint(cert), "serial": format(cert.serial_number, "x"),
                    "notBefore": cert.not_valid_before_utc.isoformat(),
                    "notAfter": cert.not_valid_after_utc.isoformat()}  # fmt: skip

        def role(cert: x509.Certificate) -> str:
            if self._active is None:
                return "anchor"
            return "active" if cert is self._active.cert else "retiring"

        until = self._overlap_until
        return {
            "trustDomain": self.trust_domain,
            "operatorProvided": self.operator_provided,
            "certTtlSeconds": self.cert_ttl.total_seconds(),
            "roots": [root(c, role(c)) for c in self._bundle],
            "rotation": None if self._retiring is None else {
                "overlapUntil": None if until is None else
                datetime.datetime.fromtimestamp(until, UTC).isoformat()},
        }
