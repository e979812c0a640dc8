"""Lease owner ids, and telling whether the process behind one is gone.

An owner id is `<host>:<pid>:<boot token>:<slot>`. At start-up a server recovers the running jobs of owners on its
own host whose process no longer exists (or that carry its own pid with another boot token: a restarted container),
without waiting for their leases to expire. Owners on other hosts are left to lease expiry.
"""

from __future__ import annotations

import os
import secrets
import socket

BOOT_TOKEN = secrets.token_hex(4)
"""Random per process start; distinguishes two lives of one pid."""


def owner_id(slot: int | str) -> str:
    """The lease owner id of worker `slot` (or of another lease holder of this process, such as `webhooks`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{BOOT_TOKEN}:{slot}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_dead(owner: str) -> bool:
    """True when `owner` names a process of this host that is certainly gone."""
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid, token = int(parts[1]), parts[2]
    if token == BOOT_TOKEN:
        return False
    return pid == os.getpid() or not _pid_alive(pid)
