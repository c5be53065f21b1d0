"""Start a real process for a test and know, not guess, when it is ready.

Why: every integration test runs real programs (a sidecar, an upstream, a control plane),
and each of them announces readiness with a line on stdout. A test must wait for that
line against a deadline, fail with the program's own last words when it exits or stays
silent, and never leave the program running.

How: `start(argv, ready=REGEX)` runs argv in its own process group (so `stop()` reaches
any workers it forks) with PR_SET_PDEATHSIG (so the kernel ends it if the test runner
dies without cleaning up). Two threads drain stdout and stderr from the first byte to EOF,
so a chatty child never blocks on a full pipe, and keep the last lines of each. The
launcher is synchronous and has no event loop of its own: it suits pytest fixtures, and an
asyncio supervisor (plait.demo.procs) or another launcher (plait.testing.control) can be
rebuilt on `Process` by calling `wait_for_line` in a thread.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from typing import IO, Sequence

_PR_SET_PDEATHSIG = 1
TAIL_LINES = 200  # lines of each stream kept for `wait_for_line` and failure messages


class ProcessFailed(RuntimeError):
    """The process exited or missed a deadline; the message holds its last output."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the finalizer's stop() is then the only safety net


class _Stream:
    """The lines of one pipe: a bounded tail and a count of every line ever read."""

    def __init__(self, pipe: IO[bytes], cond: threading.Condition) -> None:
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self.count = 0  # lines read so far, including those that fell out of `lines`
        self.eof = False
        self._cond = cond
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe: IO[bytes]) -> None:
        try:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip("\r\n")
                with self._cond:
                    self.lines.append(line)
                    self.count += 1
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass  # the pipe was closed under us by stop()
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def since(self, mark: int) -> list[str]:
        """Lines numbered `mark` and later that are still held (caller holds the lock)."""
        first = self.count - len(self.lines)
        return list(self.lines)[max(0, mark - first):]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Process:
    """A started process. Prefer `with start(...) as proc:` or a fixture that stops it."""

    def __init__(self, argv: Sequence[str], *, env: dict | None = None,
                 cwd: str | os.PathLike | None = None, name: str = "") -> None:
        self.argv = list(argv)
        self.name = name or os.path.basename(self.argv[0])
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True,
            preexec_fn=_die_with_parent)
        self._cond = threading.Condition()
        self._out = _Stream(self.popen.stdout, self._cond)
        self._err = _Stream(self.popen.stderr, self._cond)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def mark(self) -> int:
        """A position in stdout: `wait_for_line(..., since=mark)` sees only later lines."""
        with self._cond:
            return self._out.count

    def stdout_lines(self) -> list[str]:
        with self._cond:
            return list(self._out.lines)

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self._err.lines)

    def last_output(self) -> str:
        with self._cond:
            out, err = list(self._out.lines)[-30:], list(self._err.lines)[-30:]
        parts = []
        if out:
            parts.append("stdout:\n  " + "\n  ".join(out))
        if err:
            parts.append("stderr:\n  " + "\n  ".join(err))
        return "\n".join(parts) or "(no output)"

    def wait_for_line(self, pattern: str | re.Pattern, *, timeout: float,
                      since: int = 0) -> re.Match:
        """The first stdout line numbered `since` or later that `pattern` matches (re.search).

        Raises ProcessFailed if the process closes stdout (exits) first or `timeout`
        seconds pass; the process is left running, for the caller's finalizer to stop."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        pos = since
        with self._cond:
            while True:
                for line in self._out.since(pos):
                    pos += 1
                    match = regex.search(line)
                    if match:
                        return match
                pos = max(pos, self._out.count)
                if self._out.eof:
                    state = f"exited with {self.popen.wait()}"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    state = f"printed no line matching {regex.pattern!r} within {timeout:g}s"
                    break
                self._cond.wait(remaining)
        raise ProcessFailed(f"{self.name} (pid {self.pid}) {state}; "
                            f"its last output:\n{self.last_output()}")

    def wait(self, timeout: float) -> int:
        """The exit code once the process exits by itself; ProcessFailed after `timeout`."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ProcessFailed(f"{self.name} (pid {self.pid}) still running after "
                                f"{timeout:g}s; its last output:\n{self.last_output()}") from None

    def signal(self, sig: int) -> None:
        """Send `sig` to the process itself (not its group)."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, *, grace: float = 5.0) -> int:
        """SIGTERM to the process group; SIGKILL after `grace` seconds. Returns the exit code.

        Whatever the leader left behind in its group is killed too. Safe to call twice."""
        if self.popen.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait()
        _signal_group(self.pid, signal.SIGKILL)
        self._out.join(2.0)
        self._err.join(2.0)
        for pipe in (self.popen.stdout, self.popen.stderr):
            try:
                pipe.close()
            except OSError:
                pass
        return self.popen.returncode

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start(argv: Sequence[str], *, ready: str | re.Pattern | None = None,
          timeout: float = 20.0, env: dict | None = None,
          cwd: str | os.PathLike | None = None, name: str = "") -> tuple[Process, re.Match | None]:
    """Start argv; with `ready`, return once a stdout line matches it.

    Returns (process, match of the ready line or None). If the process exits or stays
    silent past `timeout`, it is stopped and ProcessFailed raised with its last output."""
    proc = Process(argv, env=env, cwd=cwd, name=name)
    if ready is None:
        return proc, None
    try:
        match = proc.wait_for_line(ready, timeout=timeout)
    except BaseException:
        proc.stop(grace=1.0)
        raise
    return proc, match
