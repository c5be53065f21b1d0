"""Start a real `plait control` process and wait until it says it is ready.

The control plane prints `plait control ready api=HOST:PORT xds=...` once its API is
accepting; the launcher (`plait.testing.procs`) waits for that line against a deadline,
never sleeping and guessing. Ports default to 0, so parallel tests never collide. Always
stop what you start: `with start_control(...) as cp:`, or a fixture calling `cp.stop()`.

Security. `plait control` authenticates every API call unless run with `--insecure-dev`.
`start_control(secure=True)` starts it as operators do: a bootstrap admin token is written
to `<data-dir>/admin.token` and kept in `ControlPlane.token`; `run_cli` passes it on
(`PLAIT_TOKEN`), and `ControlPlane.headers` carries it for plain HTTP clients. With
`api_tls=True` the API is served over TLS and `ControlPlane.ca_file` is the trust bundle.
The default (`secure=False`) adds `--insecure-dev`, because sidecars started by the test
kit do not present join tokens yet; a test of security asks for `secure=True`.

Also here: `run_cli`, which runs a `plait` subcommand against a given control plane.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from plait.testing.procs import Process, start

READY = r"^plait control ready api=(\S+) xds=(\S+)$"
PLAIT = [sys.executable, "-m", "plait"]


@dataclass
class ControlPlane:
    process: Process
    api_url: str  # http://127.0.0.1:PORT
    xds_address: str  # HOST:PORT, or "off" without the push side
    data_dir: Path
    token: str | None = None  # the bootstrap admin token (secure=True)
    ca_file: Path | None = None  # the mesh trust bundle, to verify the API over TLS

    @property
    def headers(self) -> dict[str, str]:
        """The admin's Authorization header ({} without a token)."""
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def stderr(self) -> str:
        return self.process.stderr_text()

    def stop(self, *, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        return self.process.stop(grace=grace)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_control(
    data_dir: str | os.PathLike | None = None,
    *,
    api_port: int = 0,
    xds_port: int = 0,
    extra_args: tuple[str, ...] = (),
    ready_within: float = 30.0,
    secure: bool = False,
    api_tls: bool = False,
) -> ControlPlane:
    """Start `plait control` on loopback and return once it is ready.

    `secure`: authenticate API calls, with a bootstrap admin token (see the module note);
    otherwise `--insecure-dev`. `api_tls`: serve the API over TLS (implies `secure`).

    Raises `plait.testing.procs.ProcessFailed` (with the process's last output) if it exits
    or is not ready within `ready_within` seconds; the process is stopped in either case.
    """
    data_dir = Path(data_dir if data_dir is not None else tempfile.mkdtemp(prefix="plait-cp-"))
    secure = secure or api_tls
    token_file = data_dir / "admin.token"
    security = ["--bootstrap-admin-token-file", str(token_file)] if secure else ["--insecure-dev"]
    if api_tls:
        security.append("--api-tls")
    argv = [*PLAIT, "control", "--data-dir", str(data_dir), "--api-host", "127.0.0.1",
            "--api-port", str(api_port), "--xds-port", str(xds_port), *security,
            *extra_args]  # fmt: skip
    process, match = start(argv, ready=READY, timeout=ready_within, name="plait control")
    assert match is not None
    scheme = "https" if api_tls else "http"
    return ControlPlane(process, f"{scheme}://{match.group(1)}", match.group(2), data_dir,
                        token=token_file.read_text().strip() if secure else None,
                        ca_file=data_dir / "ca" / "bundle.pem" if api_tls else None)  # fmt: skip


def run_cli(
    control: ControlPlane | str, *args: str, stdin: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `plait ARGS...` with PLAIT_CONTROL pointing at `control` (or a URL), and its
    admin token and trust bundle in PLAIT_TOKEN and PLAIT_CA_FILE when it has them."""
    url = control if isinstance(control, str) else control.api_url
    env = {**os.environ, "PLAIT_CONTROL": url}
    for name in ("PLAIT_TOKEN", "PLAIT_TOKEN_FILE", "PLAIT_CA_FILE"):
        env.pop(name, None)
    if isinstance(control, ControlPlane) and control.token:
        env["PLAIT_TOKEN"] = control.token
    if isinstance(control, ControlPlane) and control.ca_file:
        env["PLAIT_CA_FILE"] = str(control.ca_file)
    return subprocess.run([*PLAIT, *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def cli_output(control: ControlPlane | str, *args: str, stdin: str | None = None) -> str:
    """`run_cli`'s standard output; fails the test (with the CLI's stderr) when the
    command does not succeed."""
    done = run_cli(control, *args, stdin=stdin)
    assert done.returncode == 0, f"plait {' '.join(args)} failed: {done.stderr}"
    return done.stdout
