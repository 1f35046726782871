"""Watching processes in tests: the children of a process, and waiting (with a deadline) for some to end.

Processes are watched through pidfds opened while they run, so a pid the system reuses later for
another process cannot be mistaken for the one watched (Linux 5.3 or later).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# How long a test waits for a process it started before calling it stuck. Minutes, not seconds: on a
# shared machine a test and its processes can be paused together for minutes (`heavy --exclusive` stops
# every slot job while it measures), and a wall-clock deadline keeps running meanwhile.
PATIENCE_SECONDS = 900.0


def children(pid: int) -> list[int]:
    """The processes forked by the main thread of `pid` and still there."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextmanager
def watching(pids: list[int]) -> Iterator[list[int]]:
    """A pidfd for each process (readable once the process has ended), open for the block."""
    pidfds = [os.pidfd_open(pid) for pid in pids]
    try:
        yield pidfds
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


def all_ended(pidfds: list[int], within: float) -> bool:
    """Whether every watched process ends within `within` seconds (returns as soon as they have)."""
    deadline = time.monotonic() + within
    running = list(pidfds)
    while running:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ended, _, _ = select.select(running, [], [], remaining)
        running = [pidfd for pidfd in running if pidfd not in ended]
    return True
