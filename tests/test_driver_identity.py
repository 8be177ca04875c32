"""One owner of "which process drives this study": the study lock and driver.json record the
same identity (host, pid, process start), and both decide "gone" the same way."""

from __future__ import annotations

import os
import subprocess

from results.status import driver_gone, driver_state, is_this_driver, this_driver


def test_this_driver_is_alive_and_itself():
    me = this_driver()
    assert me["pid"] == os.getpid() and me["process_start"] is not None
    assert is_this_driver(me) and driver_gone(me) is False
    assert driver_state({**me, "state": "running"}) == "running"


def test_an_exited_or_reused_pid_is_gone_and_another_host_unknown():
    exited = subprocess.Popen(["true"])
    exited.wait()
    gone = {**this_driver(), "pid": exited.pid}
    assert driver_gone(gone) is True
    reused = {**this_driver(), "process_start": "1"}  # our pid, but another process's start
    assert driver_gone(reused) is True and not driver_gone(this_driver())
    assert driver_state({**reused, "state": "running"}) == "interrupted"
    elsewhere = {**this_driver(), "host": "another-host"}
    assert driver_gone(elsewhere) is None and driver_state(elsewhere) == "unknown"
    assert not is_this_driver(elsewhere)


def test_the_lock_and_driver_json_record_the_same_identity(tmp_path):
    from tuner.lock import StudyLock

    with StudyLock(str(tmp_path), "s") as lock:
        holder = lock._read()
    assert {k: holder[k] for k in ("host", "pid", "process_start")} == this_driver()
