"""The sidecar's workload identity: a key made here, a certificate from the mesh CA, kept
fresh for as long as the sidecar runs.

At start (`obtain`, before the sidecar serves or registers anything) the key is loaded or
made (mode 0600, in a 0700 directory; it never leaves this process), and a CSR goes to
`POST /api/v1/ca/certificates`. The first request proves who the sidecar is with its join
token (`Authorization: Bearer`); once a certificate is held, requests over https prove it
with the certificate instead (mTLS), and the token is used only where a certificate
cannot speak (plain-http control plane, or a certificate the CA no longer accepts). A
refusal (401/403) ends start-up: a sidecar without a valid token gets nothing. A control
plane that does not answer is retried; a still-valid certificate on disk is then used.

While running (`run`): the certificate is renewed at half its lifetime, counted from
when it arrived (the CA backdates `notBefore` for slow clocks, which would make a short
certificate look half-spent at once); a CA that does not answer is retried every tenth
of what is left (1 to 30 s). The trust bundle is fetched every eighth of the lifetime
(1 s to 5 min), so the overlap of a root
rotation (both roots trusted) reaches this sidecar long before the old root goes. New
material is written atomically and announced to `listeners`, which make the next
handshakes use it; open connections carry on.

The same object is the `auth` of the sidecar's control-plane calls (`ssl_context()`,
`headers()`) and makes the gRPC credentials of the xDS channel. The token and the key are
never printed, logged, or put in an error.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import sys
from pathlib import Path
from typing import Callable

from cryptography import x509

from plait.dataplane.http.client import ClientError, request
from plait.security import tls
from plait.security.files import write_file
from plait.security.labels import NAMESPACE_LABEL, TLS_LABEL
from plait.security.spiffe import SpiffeId
from plait.security.workload import BUNDLE_PATH, CSR_CONTENT_TYPE, CSR_PATH, IdentityFiles

UTC = datetime.timezone.utc
RETRY_MIN, RETRY_MAX = 1.0, 30.0  # seconds between failed renewals
POLL_MIN, POLL_MAX = 1.0, 300.0  # seconds between trust bundle fetches
START_RETRY_MAX = 5.0  # seconds between attempts at start-up


class IdentityRefused(Exception):
    """The control plane refused to issue a certificate (bad or missing credentials)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


class _Auth:
    """Credentials for one request: a TLS context and headers."""

    def __init__(self, context: ssl.SSLContext | None, headers: list) -> None:
        self._context = context
        self._headers = headers

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._context

    def headers(self) -> list:
        return self._headers


class WorkloadIdentity:
    def __init__(self, *, api: str, cert_dir: str | Path, token: str | None = None,
                 ca_file: str | None = None, now: Callable[[], datetime.datetime] = _now,
                 sleep=asyncio.sleep, post=request) -> None:
        """`api`: the control plane's API URL (http or https). `token`: the join token's
        text. `ca_file`: the mesh trust bundle to verify an https API with before this
        sidecar holds its own bundle."""
        if token is not None and (not token or any(c in token for c in "\r\n\0 ")):
            raise ValueError("the join token must be one line of text")
        self.api = api.rstrip("/")
        self.files = IdentityFiles(cert_dir)
        self.token = token
        self.ca_file = ca_file
        self.over_tls = self.api.startswith("https://")
        self.now = now
        self.sleep = sleep
        self.post = post
        self.listeners: list[Callable[[], None]] = []
        self.cert: x509.Certificate | None = None
        self.received: datetime.datetime | None = None  # when `cert` arrived (or was loaded)
        self.spiffe_id: SpiffeId | None = None
        self.renewals = 0
        self.failures = 0
        self.last_error = ""
        self._context: ssl.SSLContext | None = None

    # -- credentials for calls to the control plane -------------------------------------

    def valid(self) -> bool:
        return self.cert is not None and self.cert.not_valid_after_utc > self.now()

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS for the API: our certificate when we have one, the mesh bundle either way;
        the API's host name is checked (a workload certificate must not pass for it)."""
        if not self.over_tls:
            return None
        if self._context is None:
            if self.valid():
                ctx = tls.client_context(cert_chain=self.files.cert_chain, key=self.files.key,
                                         bundle=self.files.bundle)
            else:
                anchors = self.ca_file or (str(self.files.bundle)
                                           if self.files.bundle.exists() else None)
                if anchors is None:
                    raise ClientError("an https control plane needs --ca-file (the mesh "
                                      "trust bundle) until the first certificate arrives")
                ctx = ssl.create_default_context(cafile=anchors)
            ctx.check_hostname = True
            self._context = ctx
        return self._context

    def headers(self) -> list:
        if self.token and (not self.over_tls or not self.valid()):
            return [("authorization", f"Bearer {self.token}")]
        return []

    def grpc_credentials(self):
        """Channel credentials for the xDS stream (read now: a reconnect after a renewal
        presents the new certificate)."""
        import grpc  # only in the main process, after the fork

        return grpc.ssl_channel_credentials(
            root_certificates=self.files.bundle.read_bytes(),
            private_key=self.files.key.read_bytes(),
            certificate_chain=self.files.cert_chain.read_bytes())

    # -- what others learn about us -------------------------------------------------------

    def registry_labels(self) -> dict[str, str]:
        """Labels for the registered instance: callers use mTLS to it (auto mTLS). The
        control plane believes them only from a registration sent without credentials
        (which only `--insecure-dev` accepts); otherwise it drops them and records the
        identity the credentials prove."""
        ns = self.spiffe_id.namespace if self.spiffe_id else ""
        return {TLS_LABEL: "true", NAMESPACE_LABEL: ns}

    def node_metadata(self) -> dict:
        if self.spiffe_id is None:
            return {}
        return {"mtls": True, "namespace": self.spiffe_id.namespace,
                "service_account": self.spiffe_id.service_account,
                "trust_domain": self.spiffe_id.trust_domain}

    # -- getting and renewing -------------------------------------------------------------

    async def obtain(self) -> None:
        """The first certificate. Raises IdentityRefused; retries an unreachable control
        plane until it answers, unless a valid certificate is already on disk."""
        self.files.ensure_key()
        self._load()
        delay = RETRY_MIN
        while True:
            try:
                await self.renew()
                return
            except ClientError as exc:
                self.failures += 1
                self.last_error = str(exc)
                if self.valid():
                    _say(f"control plane not answering ({exc}); using the certificate on disk")
                    return
                _say(f"cannot get a certificate yet: {exc}")
            await self.sleep(delay)
            delay = min(delay * 2, START_RETRY_MAX)

    def _load(self) -> None:
        if not self.files.has_certificate():
            return
        try:
            cert = self.files.certificate()
            identity = self.files.spiffe_id()
        except (OSError, ValueError):
            return
        self.cert, self.spiffe_id, self.received = cert, identity, self.now()
        if not self.valid():
            self.cert = None

    async def renew(self) -> None:
        """Ask the CA for a certificate now. Raises IdentityRefused or ClientError."""
        csr = self.files.csr()
        mtls = self.over_tls and self.valid()
        if not mtls and not self.token:
            raise IdentityRefused("no valid certificate and no join token (--token-file)")
        status, body = await self._request_certificate(csr, self.headers())
        if status in (401, 403) and mtls and self.token:
            # The CA no longer takes our certificate (a root it dropped): the token may.
            status, body = await self._request_certificate(
                csr, [("authorization", f"Bearer {self.token}")], bare=True)
        if status in (401, 403):
            raise IdentityRefused(f"the control plane refused the certificate request "
                                  f"({status}: {_reason(body)})")
        if status != 201:
            raise ClientError(f"certificate request answered {status}: {_reason(body)}")
        try:
            identity = self.files.save(json.loads(body))
            self.cert = self.files.certificate()
            self.received = self.now()
        except (ValueError, OSError) as exc:
            raise ClientError(f"unusable certificate answer: {exc}") from None
        self.spiffe_id = identity
        self.renewals += 1
        self._changed()

    async def _request_certificate(self, csr: bytes, headers: list, *, bare: bool = False):
        context = self.ssl_context()
        if bare and context is not None:  # without our certificate
            context = ssl.create_default_context(cafile=str(self.files.bundle))
        return await self.post("POST", f"{self.api}{CSR_PATH}", csr,
                               content_type=CSR_CONTENT_TYPE, auth=_Auth(context, headers))

    async def fetch_bundle(self) -> bool:
        """Fetch the trust bundle; True if it changed (and was written)."""
        status, body = await self.post("GET", f"{self.api}{BUNDLE_PATH}", auth=self)
        if status != 200:
            raise ClientError(f"bundle request answered {status}")
        try:
            if not x509.load_pem_x509_certificates(body):
                raise ValueError("empty")
        except ValueError as exc:
            raise ClientError(f"unusable trust bundle: {exc}") from None
        try:
            if self.files.bundle.read_bytes() == body:
                return False
        except OSError:
            pass
        write_file(self.files.bundle, body)
        self._changed()
        return True

    def _changed(self) -> None:
        self._context = None
        for listener in list(self.listeners):
            listener()

    def _lifetime(self) -> float:
        """Seconds from the certificate's arrival to its end."""
        if self.cert is None or self.received is None:
            return 0.0
        return max(0.0, (self.cert.not_valid_after_utc - self.received).total_seconds())

    def seconds_until_renewal(self) -> float:
        """0 without a certificate or once half of its lifetime has passed."""
        if self.cert is None or self.received is None:
            return 0.0
        due = self.received + datetime.timedelta(seconds=self._lifetime() / 2)
        return max(0.0, (due - self.now()).total_seconds())

    def retry_delay(self) -> float:
        left = (self.cert.not_valid_after_utc - self.now()).total_seconds() if self.cert else 0
        return min(RETRY_MAX, max(RETRY_MIN, left / 10))

    def poll_interval(self) -> float:
        return min(POLL_MAX, max(POLL_MIN, self._lifetime() / 8))

    async def run(self) -> None:
        """Renew and poll the bundle until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._renew_forever())
            tg.create_task(self._poll_forever())

    async def _renew_forever(self) -> None:
        while True:
            await self.sleep(self.seconds_until_renewal())
            try:
                await self.renew()
            except (ClientError, IdentityRefused) as exc:
                self.failures += 1
                self.last_error = str(exc)
                _say(f"certificate renewal failed, retrying: {exc}")
                await self.sleep(self.retry_delay())

    async def _poll_forever(self) -> None:
        while True:
            await self.sleep(self.poll_interval())
            try:
                await self.fetch_bundle()
            except ClientError as exc:
                self.last_error = str(exc)


def _reason(body: bytes) -> str:
    """The control plane's error reason (its JSON shape), never the request's content."""
    try:
        return str(json.loads(body)["error"]["reason"])[:300]
    except (ValueError, KeyError, TypeError):
        return "no reason given"


def _say(text: str) -> None:
    print(f"plait sidecar: {text}", file=sys.stderr, flush=True)


def prepare(*, api: str, node_id: str, token_file: str = "", cert_dir: str = "",
            cache_dir: str = "", ca_file: str = "") -> tuple[WorkloadIdentity | None, str]:
    """The identity the sidecar's flags ask for, and its directory ("" for none).

    With neither a token nor a certificate directory there is no identity (plaintext, as
    before). Raises ValueError for flags that do not fit together or an unreadable token.
    """
    if not (token_file or cert_dir):
        return None, ""
    if not cert_dir:
        if not cache_dir:
            raise ValueError("--token-file needs --cert-dir (or a --cache-dir to put it in)")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node_id or "sidecar")
        cert_dir = str(Path(cache_dir) / f"{safe}.identity")
    token = None
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the join token file: "
                             f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    if not api:
        if token:
            raise ValueError("--token-file needs the control plane's API (--registry URL)")
        return None, cert_dir  # certificates provided by other means, used as they are
    return WorkloadIdentity(api=api, cert_dir=cert_dir, token=token, ca_file=ca_file or None), \
        cert_dir
