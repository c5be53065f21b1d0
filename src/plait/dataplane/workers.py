"""Worker processes and the channel between them and the main process.

The main process forks N-1 workers after binding the static listeners and before starting
anything threaded (gRPC). Over a socketpair, a worker says `ready` once serving, answers
`stats` with a JSON snapshot of its counters and `events` with the governance events it
held since last asked (`Worker.drain_events`), applies `config` (a pickled, already
compiled snapshot: the main process compiles once for all), and obeys `drain` and `quit`. A worker
whose main process dies exits too: PR_SET_PDEATHSIG, and EOF on the channel.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import pickle
import signal
import socket
import struct

import uvloop

CHANNEL_TIMEOUT = 10.0  # seconds a worker may take to report ready or answer
_PR_SET_PDEATHSIG = 1


class WorkerChannel:
    """The main process's end of one worker's channel."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock)
        line = await asyncio.wait_for(self.reader.readline(), CHANNEL_TIMEOUT)
        if line.strip() != b"ready":
            raise RuntimeError(f"worker {self.pid} did not start")

    async def stats(self) -> dict | None:
        """The worker's stats snapshot, or None if it cannot answer in time."""
        try:
            async with self.lock:
                self.writer.write(b"stats\n")
                line = await asyncio.wait_for(self.reader.readline(), CHANNEL_TIMEOUT)
            return json.loads(line)
        except (asyncio.TimeoutError, ValueError, ConnectionError):
            return None

    async def events(self) -> dict | None:
        """The worker's governance events since last asked, or None if it cannot answer."""
        try:
            async with self.lock:
                self.writer.write(b"events\n")
                line = await asyncio.wait_for(self.reader.readline(), CHANNEL_TIMEOUT)
            return json.loads(line)
        except (asyncio.TimeoutError, ValueError, ConnectionError):
            return None

    async def push(self, snapshot) -> None:
        blob = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
        async with self.lock:
            self.writer.write(b"config %d\n" % len(blob) + blob)
            await self.writer.drain()

    def tell(self, command: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(command + b"\n")

    def reap(self) -> None:
        """Collect the worker's exit; kill it if it is still running at this point."""
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ChildProcessError, ProcessLookupError):
            pass


class _WorkerSide:
    """A worker's end of the channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def serve(self, worker, *, drain_timeout: float) -> int:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(sock=self.sock)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        writer.write(b"ready\n")
        sweeper = loop.create_task(worker.sweep_forever())
        drain = True
        try:
            while True:
                read = loop.create_task(reader.readline())
                stopped = loop.create_task(stop.wait())
                await asyncio.wait((read, stopped), return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not read.done():
                    read.cancel()
                    break
                words = read.result().split()
                command = words[0] if words else b""
                if command == b"stats":
                    writer.write(json.dumps(worker.stats.snapshot()).encode() + b"\n")
                elif command == b"events":
                    writer.write(json.dumps(worker.drain_events()).encode() + b"\n")
                elif command == b"config":
                    blob = await reader.readexactly(int(words[1]))
                    await worker.apply(pickle.loads(blob))
                elif command in (b"drain", b"quit", b""):
                    drain = command != b"quit"
                    break
            if drain:
                await worker.drain(drain_timeout)
        finally:
            sweeper.cancel()
            worker.close()
        return 0


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: EOF on the channel still ends the worker


def fork_workers(snapshot, sockets: list[dict], options, *, worker_main) -> list[WorkerChannel]:
    """Fork one process per entry of `sockets` after the first; the child runs
    `worker_main(snapshot, its sockets, its channel, options)` and never returns."""
    channels = []
    for i in range(1, len(sockets)):
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ours.close()
                for j, socks in enumerate(sockets):
                    if j != i:
                        for s in socks.values():
                            s.close()
                _die_with_parent()
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles ^C
                code = uvloop.run(worker_main(snapshot, sockets[i], _WorkerSide(theirs),
                                              options))
            finally:
                os._exit(code)
        theirs.close()
        for s in sockets[i].values():
            s.close()
        channels.append(WorkerChannel(pid, ours))
    return channels


async def wait_workers(channels: list[WorkerChannel], timeout: float) -> None:
    """Wait up to `timeout` for every worker to exit (they drain first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for ch in channels:
        while loop.time() < deadline:
            try:
                pid, _ = os.waitpid(ch.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            await asyncio.sleep(0.05)
