"""Start a real `plait control` process and wait until it says it is ready.

The control plane prints `plait control ready api=HOST:PORT xds=...` once its API is
accepting; the launcher (`plait.testing.procs`) waits for that line against a deadline,
never sleeping and guessing. Ports default to 0, so parallel tests never collide. Always
stop what you start: `with start_control(...) as cp:`, or a fixture calling `cp.stop()`.

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
) -> ControlPlane:
    """Start `plait control` on loopback and return once it is ready.

    Raises `plait.testing.procs.ProcessFailed` (with the process's last output) if it exits
    or is not ready within `ready_within` seconds; the process is stopped in either case.
    """
    data_dir = Path(data_dir if data_dir is not None else tempfile.mkdtemp(prefix="plait-cp-"))
    argv = [*PLAIT, "control", "--data-dir", str(data_dir), "--api-host", "127.0.0.1",
            "--api-port", str(api_port), "--xds-port", str(xds_port), *extra_args]  # fmt: skip
    process, match = start(argv, ready=READY, timeout=ready_within, name="plait control")
    assert match is not None
    return ControlPlane(process, f"http://{match.group(1)}", match.group(2), data_dir)


def run_cli(
    control: ControlPlane | str, *args: str, stdin: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `plait ARGS...` with PLAIT_CONTROL pointing at `control` (or a URL)."""
    url = control if isinstance(control, str) else control.api_url
    env = {**os.environ, "PLAIT_CONTROL": url}
    return subprocess.run([*PLAIT, *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip
