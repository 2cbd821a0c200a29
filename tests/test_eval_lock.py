"""`vtc eval`'s lock on --out (vtc.eval.lock): one holder, named to the next run; a killed holder's lock is
taken over and reported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vtc.eval.lock import LOCK_NAME, OutLock


def test_a_second_lock_names_the_holder_and_a_released_lock_is_free(tmp_path):
    with OutLock(tmp_path) as first:
        assert first.stale is None
        holder = rf"in use by another vtc eval \(PID {os.getpid()} on .+, started 2\d{{3}}-"
        with pytest.raises(ValueError, match=holder):
            OutLock(tmp_path).acquire()
    with OutLock(tmp_path) as again:  # a clean release leaves no holder to report
        assert again.stale is None
    assert (tmp_path / LOCK_NAME).read_text() == ""


HOLD = """
import sys, time
from vtc.eval.lock import OutLock
OutLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_the_lock_of_a_killed_run_is_taken_over_and_reported(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"PID {proc.pid} "):
            OutLock(tmp_path).acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while True:  # the kernel drops the dead process's lock
        try:
            lock = OutLock(tmp_path).acquire()
            break
        except ValueError:
            assert time.time() < deadline
            time.sleep(0.05)
    try:
        assert lock.stale is not None and lock.stale["pid"] == proc.pid
    finally:
        lock.release()
