"""Start a real `plait control` process and wait until it says it is ready.

The control plane prints `plait control ready api=HOST:PORT xds=...` once its API is
accepting; the launcher reads stdout for that line against a deadline, never sleeping
and guessing. Ports default to 0, so parallel tests never collide. Always stop what you
start (`with start_control(...) as cp:` does it), by PID.

Also here: `run_cli`, which runs a `plait` subcommand against a given control plane.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

READY = re.compile(r"^plait control ready api=(\S+) xds=(\S+)$")
PLAIT = [sys.executable, "-m", "plait"]


@dataclass
class ControlPlane:
    process: subprocess.Popen
    api_url: str  # http://127.0.0.1:PORT
    xds_address: str  # HOST:PORT, or "off" without the push side
    data_dir: Path
    stderr_file: IO[bytes] = field(repr=False)

    def stderr(self) -> str:
        self.stderr_file.flush()
        return Path(self.stderr_file.name).read_text(errors="replace")

    def stop(self, *, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr_file.close()
        return self.process.returncode

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_ready_line(process: subprocess.Popen, deadline: float) -> re.Match[str] | None:
    """Lines of stdout until the ready line, EOF (None) or the deadline (TimeoutError)."""
    assert process.stdout is not None
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("plait control did not report readiness in time")
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                return None
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                match = READY.match(line.decode(errors="replace").strip())
                if match:
                    return match


def start_control(
    data_dir: str | os.PathLike | None = None,
    *,
    api_port: int = 0,
    xds_port: int = 0,
    extra_args: tuple[str, ...] = (),
    ready_within: float = 30.0,
) -> ControlPlane:
    """Start `plait control` on loopback and return once it is ready.

    Raises RuntimeError (with the process's stderr) if it exits or is not ready within
    `ready_within` seconds; the process is stopped in either case.
    """
    data_dir = Path(data_dir if data_dir is not None else tempfile.mkdtemp(prefix="plait-cp-"))
    stderr_file = tempfile.NamedTemporaryFile(prefix="plait-control-", suffix=".log")
    cmd = [*PLAIT, "control", "--data-dir", str(data_dir), "--api-host", "127.0.0.1",
           "--api-port", str(api_port), "--xds-port", str(xds_port), *extra_args]  # fmt: skip
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr_file,
                               stdin=subprocess.DEVNULL)  # fmt: skip
    cp = ControlPlane(process, "", "", data_dir, stderr_file)
    try:
        match = _read_ready_line(process, time.monotonic() + ready_within)
    except BaseException:
        stderr = cp.stderr()
        cp.stop()
        raise RuntimeError(f"plait control not ready in {ready_within}s:\n{stderr}") from None
    if match is None:
        stderr = cp.stderr()
        code = cp.stop()
        raise RuntimeError(f"plait control exited ({code}) before ready:\n{stderr}")
    cp.api_url = f"http://{match.group(1)}"
    cp.xds_address = match.group(2)
    return cp


def run_cli(
    control: ControlPlane | str, *args: str, stdin: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `plait ARGS...` with PLAIT_CONTROL pointing at `control` (or a URL)."""
    url = control if isinstance(control, str) else control.api_url
    env = {**os.environ, "PLAIT_CONTROL": url}
    return subprocess.run([*PLAIT, *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip
