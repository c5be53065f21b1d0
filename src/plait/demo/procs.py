"""A small supervisor for the processes a demo starts.

Every child is started in its own process group (so a Ctrl-C in the terminal reaches only
the demo, which then stops its children in order) and asks the kernel to kill it if the
demo itself dies without cleaning up (PR_SET_PDEATHSIG). A child is ready when it prints a
line starting with its ready prefix; the supervisor waits for that line with a deadline
and fails with the child's last output if the child exits or stays silent. Output is
drained continuously, so a chatty child never blocks on a full pipe. `stop_all` stops
every child, newest first: SIGTERM to its process group, SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections import deque
from dataclasses import dataclass, field

_PR_SET_PDEATHSIG = 1


class ChildFailed(RuntimeError):
    """A child exited or missed its readiness deadline; the message holds its last output."""


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    ready_prefix: str
    ready_line: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=30))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def value_of(self, key: str) -> str:
        """The value of `key=value` in the ready line (`port`, `admin`, ...)."""
        for word in self.ready_line.split():
            if word.startswith(key + "="):
                return word.split("=", 1)[1]
        raise KeyError(f"{self.name} ready line has no {key}=: {self.ready_line!r}")

    def last_output(self) -> str:
        return "\n  ".join(self.tail) or "(no output)"

    async def _drain(self) -> None:
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.tail.append(line)
            if not self.ready_line and line.startswith(self.ready_prefix):
                self.ready_line = line
                self.ready.set()
        self.ready.set()  # EOF: wake the waiter, which sees there is no ready line


class Supervisor:
    """Owns the demo's children. Use `async with Supervisor() as sup:`."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    async def __aenter__(self) -> "Supervisor":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop_all()

    async def start(self, name: str, argv: list[str], *, ready_prefix: str,
                    timeout: float = 15.0, env: dict | None = None) -> Child:
        """Starts argv and returns once it printed its ready line.

        Raises ChildFailed (after stopping the child) if it exits first or `timeout` passes."""
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent, env=env)
        child = Child(name, process, ready_prefix)
        self.children.append(child)
        child.reader = asyncio.create_task(child._drain(), name=f"drain-{name}")
        try:
            await asyncio.wait_for(child.ready.wait(), timeout)
        except TimeoutError:
            pass
        if not child.ready_line:
            state = (f"exited with {process.returncode}" if process.returncode is not None
                     else f"printed no {ready_prefix!r} line within {timeout:g}s")
            await self.stop(child)
            raise ChildFailed(f"{name} {state}; its last output:\n  {child.last_output()}")
        return child

    async def stop(self, child: Child, grace: float = 5.0) -> None:
        """SIGTERM to the child's process group; SIGKILL if it has not exited after `grace`."""
        if child.process.returncode is None:
            _signal_group(child.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), grace)
            except TimeoutError:
                _signal_group(child.pid, signal.SIGKILL)
                await child.process.wait()
        _signal_group(child.pid, signal.SIGKILL)  # any worker left in the group
        if child.reader is not None:
            try:
                await asyncio.wait_for(child.reader, 2)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if child in self.children:
            self.children.remove(child)

    async def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            await self.stop(child)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def run_until_signal(main, console, *, failures: tuple = (ChildFailed,)) -> int:
    """Run the coroutine `main()` until it ends or the first SIGINT/SIGTERM cancels it
    (which stops the children it started). Returns 0, or 1 after one of `failures`."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await main()
    except asyncio.CancelledError:
        if not stopping:
            raise
        console.print("stopped; every process the demo started has exited")
    except failures as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    return 0
