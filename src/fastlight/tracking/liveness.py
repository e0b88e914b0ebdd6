"""Is a "running" run still running? Read from its summary.json alone (no torch, no lightning).

A run killed outright (SIGKILL, a machine gone) never writes its ending, so its summary keeps
saying "running". Its heartbeat says otherwise: on the same host its process id no longer
answers, and anywhere its `updated_at` (refreshed at least every epoch and every minute) stops
moving. Such a run reads as "killed", with the time it last reported.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from datetime import datetime

STALE_AFTER_S = 3600.0  # a run on another host that has not reported for this long is taken for dead


def timestamp(value) -> float | None:
    """summary.json times: epoch seconds, or ISO text (local time when it carries no zone)."""
    if isinstance(value, (int, float)):
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        return datetime.fromisoformat(value).timestamp()
    return None


def last_report(summary: dict) -> float | None:
    """When the run last wrote its summary (epoch seconds), if it says."""
    value = summary.get("updated_at_s")
    return timestamp(value if value is not None else summary.get("updated_at"))


def pid_gone(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, TypeError):  # not ours, or unknowable: not known to be dead
        pass
    return False


def observed_status(summary: dict, now: float | None = None) -> str:
    """The summary's status, except that a "running" run whose process is gone (same host) or that
    has not reported for `STALE_AFTER_S` is "killed": nothing else stops a run silently."""
    status = summary.get("status", "running")
    if status != "running":
        return status
    if summary.get("pid") and summary.get("host") == socket.gethostname() and pid_gone(summary["pid"]):
        return "killed"
    last = last_report(summary)
    if last is not None and (now or time.time()) - last > STALE_AFTER_S:
        return "killed"
    return status
