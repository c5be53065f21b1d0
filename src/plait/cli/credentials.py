"""How the CLI authenticates to the control plane's API.

The token comes from `$PLAIT_TOKEN`, or from the file named by `$PLAIT_TOKEN_FILE` (better:
a command-line flag or a variable shows up in process listings and shell history, a 0600
file does not). For an `https://` `$PLAIT_CONTROL`, `$PLAIT_CA_FILE` names the mesh trust
bundle to verify the API's certificate with (`<data-dir>/ca/bundle.pem` on the control
plane's host, or `plait ca bundle`).
"""

from __future__ import annotations

import os
import ssl


class CredentialsError(Exception):
    pass


def token() -> str | None:
    text = os.environ.get("PLAIT_TOKEN", "").strip()
    if text:
        return text
    path = os.environ.get("PLAIT_TOKEN_FILE", "")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError as exc:
        raise CredentialsError(f"cannot read PLAIT_TOKEN_FILE {path}: {exc.strerror}") from None


def request_options(headers: dict[str, str] | None = None) -> dict:
    """`headers` and `verify` for an httpx request to the API."""
    headers = dict(headers or {})
    secret = token()
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    options: dict = {"headers": headers}
    ca_file = os.environ.get("PLAIT_CA_FILE", "")
    if ca_file:
        try:
            options["verify"] = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise CredentialsError(f"cannot read PLAIT_CA_FILE {ca_file}: {exc}") from None
    return options


def hint(status: int | None = None, error: str = "") -> str:
    """A hint to add to an error message, or ''."""
    if status == 401 and token() is None:
        return " (set PLAIT_TOKEN or PLAIT_TOKEN_FILE)"
    if "CERTIFICATE_VERIFY_FAILED" in error and not os.environ.get("PLAIT_CA_FILE"):
        return " (set PLAIT_CA_FILE to the mesh trust bundle)"
    return ""
