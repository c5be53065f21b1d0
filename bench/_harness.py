"""Shared pieces of Plait's benchmarks: ports, processes, load generators, memory.

A benchmark starts real processes (an upstream, the proxies under test, the load
generators), pins them so the proxy never shares a core with the load, measures, and stops
everything it started in `finally`. This module holds what every benchmark needs:

- `free_port`, `cpu_plan`: where things listen and run;
- `Procs`: starts children in their own process group (pinned, stdout drained into a log
  file by a thread that also spots a readiness line) and stops them all by PID;
- `wait_http`: readiness for servers that print nothing (nginx, HAProxy), with a deadline;
- `run_wrk` (saturation, via wrk and a Lua `done` hook that prints exact numbers) and
  `run_paced` (fixed rate, via `_paced.py`) and `run_paced_in_turns` (several targets
  in turns of a fraction of a second, so they meet the same machine);
- `peak_rss_mb`: VmHWM summed over a process group.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_plan() -> tuple[set[int], set[int]]:
    """(proxy CPUs, load CPUs): the first allowed CPU for the proxy, the second for load.

    With a single CPU both share it, and the numbers say less; the caller warns."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {cpus[0]}, {cpus[0]}
    return {cpus[0]}, {cpus[1]}


def _child_setup(cpus: set[int] | None):
    def setup() -> None:
        # Die with the benchmark even if it is killed with SIGKILL.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
        if cpus:
            os.sched_setaffinity(0, cpus)
    return setup


@dataclass
class Proc:
    """One child process (the leader of its own process group) and its log."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    ready_prefix: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    ready_line: str = ""
    tail: deque = field(default_factory=lambda: deque(maxlen=20))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        """Every live process in this child's process group (the child and its workers)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) == self.pid and fields[0] != "Z":
                found.append(int(entry))
        return found

    def describe_failure(self) -> str:
        return f"{self.name} (pid {self.pid}) last output:\n  " + "\n  ".join(self.tail)

    def _drain(self, stream) -> None:
        with open(self.log_path, "w") as log:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                log.write(line + "\n")
                self.tail.append(line)
                if self.ready_prefix and not self.ready.is_set() and line.startswith(self.ready_prefix):
                    self.ready_line = line
                    self.ready.set()
        self.ready.set()  # EOF: wake any waiter; it checks whether the child is still alive


class Procs:
    """Starts children and stops every one of them, by PID, in `stop_all`."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.children: list[Proc] = []

    def start(self, name: str, argv: list[str], *, cpus: set[int] | None = None,
              ready_prefix: str | None = None, env: dict | None = None) -> Proc:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_child_setup(cpus), env=env)
        proc = Proc(name=name, popen=popen, log_path=self.workdir / f"{name}.log",
                    ready_prefix=ready_prefix)
        self.children.append(proc)
        threading.Thread(target=proc._drain, args=(popen.stdout,), daemon=True).start()
        return proc

    def wait_line(self, proc: Proc, timeout: float) -> str:
        """Waits for the child's readiness line; raises if it exits or the deadline passes."""
        if not proc.ready.wait(timeout) or not proc.ready_line:
            state = (f"exited ({proc.popen.returncode}) without" if proc.popen.poll() is not None
                     else "gave no")
            raise RuntimeError(f"{proc.name} {state} ready line within {timeout}s; "
                               + proc.describe_failure())
        return proc.ready_line

    def stop(self, proc: Proc, timeout: float = 5.0) -> None:
        """SIGTERM to the child's process group, SIGKILL after `timeout`."""
        if proc.popen.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout)
        # Workers that outlived their leader (same group) get no second chance.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc in self.children:
            self.children.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.children)):
            self.stop(proc)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http(port: int, proc: Proc, *, path: str = "/", timeout: float = 10.0) -> None:
    """Polls GET http://127.0.0.1:port/path until it answers 200, the child dies, or time runs out."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; " + proc.describe_failure())
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.02)  # poll interval of a readiness check, not a guess at start-up time
    raise RuntimeError(f"{proc.name} not answering on :{port} after {timeout}s ({last}); "
                       + proc.describe_failure())


def peak_rss_mb(proc: Proc) -> float:
    """Peak resident memory (VmHWM) summed over the live processes of the child's group."""
    total_kb = 0
    for pid in proc.pids():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


@dataclass
class LoadResult:
    """One load run. Latencies are microseconds, measured from write to full response."""

    requests: int
    seconds: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    errors: int
    extra: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(procs: Procs, url: str, *, connections: int, seconds: int, cpus: set[int] | None,
            threads: int = 1, timeout_s: int = 5, headers: dict | None = None) -> LoadResult:
    """Runs `wrk -tT -cC -dD --latency` against url; returns its exact numbers from Lua.
    `headers` go on every request (`Connection: close` makes each one a new connection)."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s",
            "--latency", "-s", str(HERE / "wrk_report.lua"), url]
    for name, value in (headers or {}).items():
        argv[1:1] = ["-H", f"{name}: {value}"]
    proc = procs.start("wrk", argv, cpus=cpus, ready_prefix="WRK_JSON ")
    try:
        proc.popen.wait(seconds + 30)
        procs.wait_line(proc, timeout=5)
    finally:
        procs.stop(proc)
    data = json.loads(proc.ready_line.split(" ", 1)[1])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(requests=data["requests"], seconds=data["duration_us"] / 1e6,
                      p50_us=data["p50"], p90_us=data["p90"], p99_us=data["p99"],
                      max_us=data["max"], errors=errors, extra={"wrk": data})


def run_paced(procs: Procs, host: str, port: int, *, rate: int, seconds: float,
              cpus: set[int] | None, warmup: float = 1.0) -> LoadResult:
    """Runs `_paced.py` (open-loop, fixed rate) against host:port; returns its numbers."""
    argv = [sys.executable, str(HERE / "_paced.py"), "--host", host, "--port", str(port),
            "--rate", str(rate), "--duration", str(seconds), "--warmup", str(warmup)]
    proc = procs.start("paced", argv, cpus=cpus, ready_prefix="PACED_JSON ")
    try:
        proc.popen.wait(seconds + warmup + 30)
        procs.wait_line(proc, timeout=5)
    finally:
        procs.stop(proc)
    data = json.loads(proc.ready_line.split(" ", 1)[1])
    return LoadResult(requests=data["completed"], seconds=data["seconds"], p50_us=data["p50"],
                      p90_us=data["p90"], p99_us=data["p99"], max_us=data["max"],
                      errors=data["errors"], extra={"paced": data})


def run_paced_in_turns(procs: Procs, targets: list[tuple[str, int]], *, rate: int,
                       seconds: float, cpus: set[int] | None, warmup: float = 1.0,
                       slice_s: float = 0.5) -> list[LoadResult]:
    """Runs `_paced.py` against each target in turn, `slice_s` seconds at a time, until
    each has had `seconds`: the targets see the same machine, seconds apart."""
    argv = [sys.executable, str(HERE / "_paced.py"), "--targets",
            ",".join(f"{host}:{port}" for host, port in targets), "--slice", str(slice_s),
            "--rate", str(rate), "--duration", str(seconds), "--warmup", str(warmup)]
    proc = procs.start("paced", argv, cpus=cpus, ready_prefix="PACED_JSON ")
    try:
        proc.popen.wait(len(targets) * (seconds + warmup) * 1.5 + 30)
        procs.wait_line(proc, timeout=5)
    finally:
        procs.stop(proc)
    return [LoadResult(requests=data["completed"], seconds=data["seconds"], p50_us=data["p50"],
                       p90_us=data["p90"], p99_us=data["p99"], max_us=data["max"],
                       errors=data["errors"], extra={"paced": data})
            for data in json.loads(proc.ready_line.split(" ", 1)[1])["targets"]]


def median_result(results: list[LoadResult]) -> LoadResult:
    """Combines repeated runs: the median run by throughput, median of each percentile.

    On a shared machine a neighbour's burst spoils one run, not the median of three."""
    if len(results) == 1:
        return results[0]
    by_rps = sorted(results, key=lambda r: r.rps)
    mid = by_rps[len(by_rps) // 2]

    def med(attr: str) -> float:
        values = sorted(getattr(r, attr) for r in results)
        return values[len(values) // 2]

    return LoadResult(requests=mid.requests, seconds=mid.seconds, p50_us=med("p50_us"),
                      p90_us=med("p90_us"), p99_us=med("p99_us"), max_us=max(r.max_us for r in results),
                      errors=sum(r.errors for r in results), extra={"runs": [r.extra for r in results]})


def load_average() -> float:
    """The one-minute load average: a busy machine makes every number here noisier."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_busy_ticks(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one CPU since boot, from /proc/stat. Busy is time
    given to processes (user, nice, system) or taken by the hypervisor (steal); interrupt
    and softirq time is left out of busy, since on the proxy's CPU it is mostly the
    proxy's own network traffic (loopback delivery runs in the sender's softirq)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
            busy = user + nice + system + steal
            return busy, busy + idle + iowait + irq + softirq
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def group_cpu_ticks(proc: Proc) -> int:
    """User plus system clock ticks used so far by the live processes of the child's group."""
    total = 0
    for pid in proc.pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total


class Interference:
    """How busy one CPU was with work other than `own` between `start()` and `share()`:
    other processes, and time the hypervisor gave to other machines (steal).

    Affinity keeps the benchmark's processes apart but cannot keep a neighbour's process off
    the proxy's CPU; this says how much it intruded (0.0 to 1.0 of the CPU's time)."""

    def __init__(self, cpu: int, own: Proc | list[Proc] | None):
        self.cpu = cpu
        self.own = [own] if isinstance(own, Proc) else list(own or ())
        self.busy0 = self.total0 = self.own0 = 0

    def _own_ticks(self) -> int:
        return sum(group_cpu_ticks(p) for p in self.own)

    def start(self) -> None:
        self.busy0, self.total0 = cpu_busy_ticks(self.cpu)
        self.own0 = self._own_ticks()

    def share(self) -> float:
        busy, total = cpu_busy_ticks(self.cpu)
        own = self._own_ticks() - self.own0
        if total <= self.total0:
            return 0.0
        return max(0.0, (busy - self.busy0 - own) / (total - self.total0))


def _stop(signum, frame):
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt, so a benchmark's `finally` stops
    everything it started. SIGINT too: a shell may start us with it ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
