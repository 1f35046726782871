"""Worker processes that end with the process they work for, however it ends (even `kill -9`).

A pool worker blocks reading its job queue; when the process that owns the pool dies without shutting
the pool down, nothing ever writes to that queue again (and the workers hold its other end open
themselves, so it never reports end of file): the worker would wait forever. So each worker watches
the owner with a pidfd, which becomes readable the moment that process ends, and exits then.
"""

from __future__ import annotations

import os
import select
import threading


def exit_with(pid: int) -> None:
    """End this process (`os._exit(0)`) as soon as process `pid` ends, from a daemon thread.

    Linux 5.3 or later (pidfd_open); elsewhere nothing is watched. A `pid` already gone ends this
    process at once.
    """
    threading.Thread(target=_exit_when_ended, args=(pid,), name=f"exit-with-{pid}", daemon=True).start()


def _exit_when_ended(pid: int) -> None:
    try:
        watched = os.pidfd_open(pid)  # a descriptor that becomes readable when `pid` ends
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # not Linux 5.3 or later: no watch
        return
    select.select([watched], [], [])
    os._exit(0)
