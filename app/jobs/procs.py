"""Is a process of this host still alive (a zombie, killed but not yet reaped, counts as dead)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust kill(0)
    return state not in ("Z", "X")
