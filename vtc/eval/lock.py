"""One ``vtc eval`` per output folder: an exclusive lock on ``--out``.

The lock is ``OUT/.vtc-eval.lock``, held with ``fcntl.flock`` for as long as the run lives; the file
records the holder (PID, host, start time, command). The kernel drops a ``flock`` when its process dies,
SIGKILL included, so a killed run never blocks the next one: the next run takes the lock over and says
whose it was (the file still names the dead holder, since only a clean exit empties it). A second run
on a folder whose holder is alive stops at once and names it. Under ``torchrun`` rank 0 holds the lock
for the whole job. On systems without ``fcntl`` the lock is an ``O_EXCL`` file and a holder is stale when
its PID no longer runs on this host.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".vtc-eval.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def describe_holder(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}"


def _read(text: str) -> dict[str, Any] | None:
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return None
    return holder if isinstance(holder, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutLock:
    """``with OutLock(out) as lock:``; ``lock.stale`` is the holder a killed run left behind (or None)."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None

    def _me(self) -> str:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": sys.argv}
        return json.dumps(me) + "\n"

    def acquire(self) -> OutLock:
        """Take the lock, or raise ValueError naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self._acquire_exclusive()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")) or {}
            os.close(fd)
            raise ValueError(
                f"--out: {self.path.parent} is in use by another vtc eval ({describe_holder(holder)}); wait for it "
                "to finish or use another --out"
            ) from None
        self.stale = _read(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._me().encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _acquire_exclusive(self) -> OutLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read(self.path.read_text(encoding="utf-8", errors="replace")) or {}
                same_host = holder.get("host") == socket.gethostname()
                if same_host and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                    self.stale = holder
                    self.path.unlink(missing_ok=True)
                    continue
                raise ValueError(
                    f"--out: {self.path.parent} is in use by another vtc eval ({describe_holder(holder)}); wait for "
                    f"it to finish or use another --out (or delete {self.path} if that run is gone)"
                ) from None
            os.write(fd, self._me().encode())
            self._fd = fd
            return self
        raise ValueError(f"--out: could not take the lock {self.path}")

    def release(self) -> None:
        if self._fd is None:
            return
        if fcntl is None:
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no holder behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
