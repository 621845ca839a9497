"""Locks and files written as root cannot be turned against the host by another local user.

The attacker is the real `nobody` user planting links and files in a world-writable sticky
directory (like /tmp or /run/lock on hosts where fs.protected_symlinks is off).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkrun import run_sql_check as run

from pgbackup_verify import locks
from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill import safety as drillsafety
from pgbackup_verify.facts.drill.cluster import CLUSTER_PREFIX, stop_cluster_dir, sweep_stale
from pgbackup_verify.facts.drill.run import run_drill

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
SYSTEM_PYTHON = "/usr/bin/python3"
VICTIM_TEXT = "root:x:0:0:precious\n"


def as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), user="nobody", group="nogroup", capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable sticky directory, like /tmp."""
    d = Path(tempfile.mkdtemp(prefix="pgbv-shared-"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pgbv-locktest-"))
    d.chmod(0o711)  # the postgres OS user must reach a throwaway cluster under it
    yield d
    for leftover in d.glob(f"{CLUSTER_PREFIX}*"):
        stop_cluster_dir(leftover)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-owned file a planted link points at."""
    v = tmp_path / "victim"
    v.write_text(VICTIM_TEXT)
    return v


def test_default_drill_lock_is_in_a_private_directory_not_the_work_dir() -> None:
    path = drillsafety.default_lock_path()
    st = os.lstat(path.parent)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
    assert not str(path).startswith(tempfile.gettempdir() + "/pgbackup-verify-drill")
    # Other drills of this machine (xdist workers, other runs) share the lock: wait for them.
    with drillsafety.DrillLock(None, 600) as lock:
        assert lock.path is None and lock.waited < 600
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


def test_planted_symlink_lock_is_refused_and_its_target_untouched(shared_dir: Path, victim: Path) -> None:
    link = shared_dir / "pgbackup-verify-drill.lock"
    planted = as_nobody("ln", "-s", str(victim), str(link))
    assert planted.returncode == 0, planted.stderr
    with pytest.raises(drillsafety.DrillAborted) as e, drillsafety.DrillLock(link, 1):
        pass
    assert str(e.value) == (f"drill lock: lock '{link}' is a symbolic link; refusing to follow it: remove it, or keep "
                            "lock files in a directory only this user can write ([drill].lock_file)")
    assert victim.read_text() == VICTIM_TEXT and os.path.islink(link)


def test_lock_file_planted_by_another_user_is_refused_not_waited_on(shared_dir: Path) -> None:
    path = shared_dir / "drill.lock"
    assert as_nobody("sh", "-c", f"echo theirs > '{path}'").returncode == 0
    with pytest.raises(drillsafety.DrillAborted) as e, drillsafety.DrillLock(path, 3600):
        pass
    assert "belongs to uid 65534, not to this user (uid 0); refusing to use it" in str(e.value)
    assert path.read_text() == "theirs\n"


def test_hard_link_lock_is_refused(tmp_path: Path, victim: Path) -> None:
    alias = tmp_path / "alias.lock"
    os.link(victim, alias)
    with pytest.raises(locks.LockError, match="has 2 hard links"):
        locks.FileLock(alias).acquire()
    assert victim.read_text() == VICTIM_TEXT


def test_drill_with_a_planted_lock_link_aborts_with_one_line(backups: Path, write_target, work_dir: Path,
                                                             shared_dir: Path, victim: Path) -> None:
    link = shared_dir / "x.lock"
    assert as_nobody("ln", "-s", str(victim), str(link)).returncode == 0
    target = load_target(write_target(backups, f'[drill]\nwork_dir = "{work_dir}"\nlock_file = "{link}"\n'))
    facts = run_drill(target)
    assert facts.aborted and facts.aborted.startswith(f"drill lock: lock '{link}' is a symbolic link")
    assert "\n" not in facts.aborted and facts.outcome is None
    assert victim.read_text() == VICTIM_TEXT


def test_a_non_root_run_after_a_root_run_takes_its_own_lock(shared_dir: Path) -> None:
    with drillsafety.DrillLock(None, 600):
        pass
    # The non-root run: the lock module alone (stdlib only), copied where `nobody` can read it.
    code = shared_dir / "code"
    code.mkdir(mode=0o755)
    shutil.copy(Path(locks.__file__), code / "locks.py")
    script = ("import locks\nwith locks.FileLock(locks.private_dir() / 'drill.lock', 1) as l:\n"
              "    print(l.path)\n")
    proc = as_nobody(SYSTEM_PYTHON, "-c", f"import sys; sys.path.insert(0, {str(code)!r})\n{script}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    path = Path(proc.stdout.strip())
    assert path.parent != drillsafety.default_lock_path().parent
    assert path.stat().st_uid == 65534


def test_private_dir_squatted_by_another_user_is_refused(shared_dir: Path) -> None:
    squat = shared_dir / "pgbackup-verify-0"
    assert as_nobody("mkdir", "-m", "700", str(squat)).returncode == 0
    with pytest.raises(locks.LockError, match=r"belongs to uid 65534, not to this user \(uid 0\)"):
        locks.ensure_private_dir(squat)
    link = shared_dir / "linked"
    assert as_nobody("ln", "-s", "/etc", str(link)).returncode == 0
    with pytest.raises(locks.LockError, match="is not a directory"):
        locks.ensure_private_dir(link)


def test_run_lock_through_a_planted_link_is_one_line_and_exit_4(pytester: pytest.Pytester, target_file: Path,
                                                                shared_dir: Path, victim: Path) -> None:
    link = shared_dir / "run.lock"
    assert as_nobody("ln", "-s", str(victim), str(link)).returncode == 0
    result = run(pytester, "--target", str(target_file), "--lock", str(link))
    assert result.ret == 4
    err = result.stderr.str()
    assert f"pgbackup-verify: --lock: lock '{link}' is a symbolic link; refusing to follow it" in err
    assert "Traceback" not in err
    assert victim.read_text() == VICTIM_TEXT


def test_sweep_never_touches_a_look_alike_planted_by_another_user(shared_dir: Path, work_dir: Path) -> None:
    fake = shared_dir / f"{CLUSTER_PREFIX}drill-planted"
    assert as_nobody("mkdir", str(fake)).returncode == 0
    assert as_nobody("sh", "-c", f"echo 'pid=1 host=x started=0' > '{fake}/owner'; "
                                 f"echo 99999 > '{fake}/owner.pid'").returncode == 0
    assert drillsafety.local_leftovers(shared_dir) == []
    assert drillsafety.sweep(shared_dir, "restore_drill_", 0, None) == []
    assert sweep_stale(f"{CLUSTER_PREFIX}*", shared_dir) == []
    assert (fake / "owner").is_file()


def test_latest_report_replaces_a_planted_link_instead_of_writing_through_it(
        pytester: pytest.Pytester, target_file: Path, victim: Path) -> None:
    reports = pytester.path / "reports"
    reports.mkdir()
    (reports / "latest.json").symlink_to(victim)
    result = run(pytester, "--target", str(target_file), "--reports-dir", str(reports))
    assert result.ret == 0, result.stdout.str()
    assert victim.read_text() == VICTIM_TEXT
    assert not (reports / "latest.json").is_symlink()
    assert '"status": "OK"' in (reports / "latest.json").read_text()


def test_world_writable_reports_directory_is_refused(pytester: pytest.Pytester, target_file: Path,
                                                     shared_dir: Path) -> None:
    result = run(pytester, "--target", str(target_file), "--reports-dir", str(shared_dir))
    assert result.ret == 4
    assert f"reports directory '{shared_dir}' is writable by other users (mode 1777); run: chmod go-w" \
        in result.stderr.str()
    assert list(shared_dir.iterdir()) == []

