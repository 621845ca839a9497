"""Owners of leftovers are judged by pid AND process start time (facts/drill/owner.py).

A recycled pid must never keep a crashed run's cluster, spool dir or scratch database alive.
Real processes throughout: this one, a sleeping child, an exited child, a zombie.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pgbackup_verify.config.sections import DrillSection
from pgbackup_verify.facts.drill import owner, safety
from pgbackup_verify.facts.drill.cluster import CLUSTER_PREFIX, LEGACY_OWNER_FILE, OWNER_FILE, mark_owner, sweep_stale
from pgbackup_verify.facts.drill.run import _leftovers

HOST = socket.gethostname()


def mark_of(pid: int, proc_start: float | None, made: float | None = None) -> str:
    fields = [f"pgbackup-verify pid={pid}", f"host={HOST}", f"started={int(made or time.time())}"]
    if proc_start is not None:
        fields.insert(1, f"proc_start={proc_start:.2f}")
    return " ".join(fields)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_the_mark_of_this_process_is_alive() -> None:
    mark = owner.parse_mark(owner.owner_mark())
    assert mark is not None and mark.pid == os.getpid() and mark.host == HOST
    assert mark.proc_start == pytest.approx(psutil.Process().create_time(), abs=0.01)
    assert owner.alive(mark)


def test_a_live_pid_with_another_start_time_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    """The pid now names another process (recycled): the owner is gone although the pid exists."""
    started = psutil.Process(sleeper.pid).create_time()
    assert owner.alive(owner.Mark(sleeper.pid, HOST, started, time.time()))
    for shift in (-60.0, -owner.START_TOLERANCE - 1, owner.START_TOLERANCE + 1, 3600.0):
        assert not owner.alive(owner.Mark(sleeper.pid, HOST, started + shift, time.time())), shift
    me = owner.parse_mark(mark_of(os.getpid(), psutil.Process().create_time() - 3600))
    assert me is not None and not owner.alive(me)


def test_an_exited_process_is_gone() -> None:
    proc = subprocess.Popen(["true"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    assert not owner.alive(owner.Mark(proc.pid, HOST, started, time.time()))


def test_a_zombie_is_gone() -> None:
    """Exited but not yet reaped by its parent: its pid still exists, its owner does not."""
    proc = subprocess.Popen(["true"])
    started = psutil.Process(proc.pid).create_time()
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert not owner.alive(owner.Mark(proc.pid, HOST, started, time.time()))
    finally:
        proc.wait()


def test_marks_of_older_versions_need_an_owner_older_than_the_mark(sleeper: subprocess.Popen[bytes]) -> None:
    """No start time recorded: a process born after the mark was written cannot have written it."""
    started = psutil.Process(sleeper.pid).create_time()
    bare = owner.parse_mark(f"{sleeper.pid}\n")
    assert bare == owner.Mark(sleeper.pid, None, None, None)
    assert owner.alive(bare, made=started + 5)
    assert not owner.alive(bare, made=started - 60)
    old = owner.parse_mark(f"pgbackup-verify drill pid={sleeper.pid} host={HOST} started={int(started) - 60}")
    assert old is not None and old.proc_start is None
    assert not owner.alive(old, made=time.time())  # the mark's own time wins over the fallback


def test_garbage_is_no_mark() -> None:
    for text in (None, "", "pid=x host=h", "host=h started=1", "pid=1 proc_start=soon"):
        assert owner.parse_mark(text) is None, text


def leftover(base: Path, name: str, mark: str | None = None, legacy: str | None = None) -> Path:
    root = base / name
    root.mkdir()
    if mark is not None:
        (root / OWNER_FILE).write_text(mark)
    if legacy is not None:
        (root / LEGACY_OWNER_FILE).write_text(legacy)
    return root


def test_sweep_stale_removes_what_a_recycled_pid_would_have_kept(tmp_path: Path) -> None:
    me = psutil.Process()
    mine = tmp_path / f"{CLUSTER_PREFIX}mine"
    mine.mkdir()
    mark_owner(mine)
    recycled = leftover(tmp_path, f"{CLUSTER_PREFIX}recycled", mark_of(me.pid, me.create_time() - 3600))
    legacy_old = leftover(tmp_path, f"{CLUSTER_PREFIX}legacy-old", legacy=str(me.pid))
    os.utime(legacy_old, (me.create_time() - 3600,) * 2)  # made an hour before this process started
    legacy_mine = leftover(tmp_path, f"{CLUSTER_PREFIX}legacy-mine", legacy=str(me.pid))
    elsewhere = leftover(tmp_path, f"{CLUSTER_PREFIX}elsewhere", f"pgbackup-verify pid=1 proc_start=1 host=not-{HOST}")
    lines = sweep_stale(f"{CLUSTER_PREFIX}*", tmp_path)
    assert sorted(lines) == sorted(f"swept leftover {p} (its process {me.pid} is gone)" for p in (legacy_old, recycled))
    assert not recycled.exists() and not legacy_old.exists()
    assert mine.is_dir() and legacy_mine.is_dir() and elsewhere.is_dir()


def test_drill_sweep_judges_by_start_time(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    started = psutil.Process(sleeper.pid).create_time()
    live = leftover(tmp_path, f"{CLUSTER_PREFIX}{safety.CLUSTER_TAG}live", mark_of(sleeper.pid, started))
    recycled = leftover(tmp_path, f"{safety.SPOOL_PREFIX}recycled", mark_of(sleeper.pid, started - 600))
    lines = safety.sweep(tmp_path, "restore_drill_", stale_minutes=60, server_dsn=None)
    assert lines == [f"left {live} alone (owner pid {sleeper.pid} still runs)",
                     f"swept leftover {recycled} (owner pid {sleeper.pid} is gone)"]
    assert live.is_dir() and not recycled.exists()


def test_what_this_drill_left_is_its_own_not_a_live_run_s(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """After its cleanup a drill lists what is left: its own objects and those of runs that ended, never the
    cluster another drill (another lock file) is using right now."""
    me = psutil.Process()
    started = psutil.Process(sleeper.pid).create_time()
    live = leftover(tmp_path, f"{CLUSTER_PREFIX}{safety.CLUSTER_TAG}live", mark_of(sleeper.pid, started))
    mine = leftover(tmp_path, f"{CLUSTER_PREFIX}{safety.CLUSTER_TAG}mine", mark_of(me.pid, me.create_time()))
    ended = leftover(tmp_path, f"{safety.SPOOL_PREFIX}ended", mark_of(sleeper.pid, started - 600))
    assert safety.in_use_elsewhere(mark_of(sleeper.pid, started))
    assert _leftovers(DrillSection(), tmp_path) == sorted([str(mine), str(ended)])
    assert live.is_dir()
