"""`python -m plait.demo` end to end: real control plane, apps, sidecars and traffic.

The mesh demo (the default) and the one-sidecar demo (`single`) are both run for real.

The demo prints the process ids it started (`demo: processes=app:PID,sidecar:PID`) and a
plain summary at exit (`demo: requests=N ok=M errors=E ...`). Each child leads its own
process group, so "nothing left running" means no live process in any of those groups.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SUMMARY = re.compile(r"^demo: requests=(\d+) ok=(\d+) errors=(\d+)", re.M)
PROCESSES = re.compile(r"^demo: processes=(\S+)", re.M)
DEMO = [sys.executable, "-m", "plait.demo"]
SINGLE = DEMO + ["single"]
CANARY = re.compile(r"v2_share=([0-9.]+) canary=(\S+) mtls_connections=(\d+)")
ENV = {**os.environ, "COLUMNS": "120"}


def live_group_members(pgids: set[int]) -> list[str]:
    """Non-zombie processes whose process group is one of pgids, as 'pid cmdline'."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, _ppid, pgrp = stat[stat.rfind(")") + 2:].split()[:3]
        if int(pgrp) in pgids and state != "Z":
            found.append(f"{entry.name} {cmdline}")
    return found


def started_pids(stdout: str) -> set[int]:
    match = PROCESSES.search(stdout)
    assert match, f"demo did not report its processes:\n{stdout}"
    return {int(item.split(":")[1]) for item in match.group(1).split(",")}


def test_mesh_demo_walks_the_canary_and_leaves_nothing_running():
    result = subprocess.run(DEMO + ["--duration", "13", "--step", "2", "--rate", "50"],
                            capture_output=True, text=True, timeout=120, env=ENV)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    requests, ok, errors = map(int, SUMMARY.search(result.stdout).groups())
    assert requests == 650 and ok == requests and errors == 0, output
    share, steps, mtls = CANARY.search(result.stdout).groups()
    assert int(mtls) >= 1, output  # the sidecars' calls to each other went over mTLS
    # three steps applied, each seen by frontend's sidecar; after 100% only v2 answers
    assert [s.split(":")[0] for s in steps.split(",")] == ["10%", "50%", "100%"], output
    assert float(share) == 1.0, output
    pids = started_pids(result.stdout)
    assert len(pids) == 9  # control plane, four apps, four sidecars
    assert live_group_members(pids) == []


def test_bounded_run_succeeds_and_leaves_nothing_running():
    result = subprocess.run(SINGLE + ["--duration", "5"], capture_output=True, text=True,
                            timeout=90, env=ENV)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = SUMMARY.search(result.stdout)
    assert match, f"no summary line:\n{output}"
    requests, ok, errors = map(int, match.groups())
    # 200 req/s for 5 s, every request sent is waited for and counted once.
    assert requests == 1000, output
    assert ok == requests and errors == 0, output
    pids = started_pids(result.stdout)
    assert len(pids) == 2
    assert live_group_members(pids) == []


def test_sigterm_stops_the_demo_and_its_children():
    proc = subprocess.Popen(SINGLE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 40
        while not any(PROCESSES.search(line) for line in seen):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "demo exited early:\n" + "".join(seen)
            seen.append(line)
        pids = started_pids("".join(seen))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (line := lines.get(timeout=5)) is not None:
        seen.append(line)
    assert SUMMARY.search("".join(seen)), "".join(seen)
    assert live_group_members(pids) == []
