"""Host checks over a backup directory whose dump names are hostile: a name that is not UTF-8, a
newline, spaces, quotes, non-ASCII letters. The backup-dir and free-space checks judge such files
(never an error), and name them the way the dump checks do: undecodable bytes as \\xNN, and control
characters escaped so a finding stays one line. The offsite size match names such a local dump the
same way (a raw name would not even survive the terminal's UTF-8 output)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from checkrun import ChecksRun, pytester_env, run_checks
from pgbackup_verify_demo import demo, scene

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_host.py"
OFFSITE = CHECKS.with_name("test_offsite.py")
HOST_CHECKS, OFFSITE_CHECKS = 10, 5
MATCH = "test_offsite_pg_dump_matches_the_local_dump"
WORLD = "test_backup_dir_and_dumps_are_not_world_readable"
FREE = "test_free_space_holds_the_next_dumps"
NEWER = time.time() + 60  # newer than every real dump: a hostile name is "the latest dump"

# raw name (bytes) -> how the checks show it
NAMES: dict[bytes, str] = {
    b"directus_\xff\xfe.sql.gz": r"directus_\xff\xfe.sql.gz",
    b"directus_new\nline.sql.gz": r"directus_new\nline.sql.gz",
    b"directus_with space.sql.gz": "directus_with space.sql.gz",
    b"directus_'sq' \"dq\".sql.gz": "directus_'sq' \"dq\".sql.gz",
    "directus_üñï€.sql.gz".encode(): "directus_üñï€.sql.gz",
}
NEWEST = b"directus_\xff\xfe.sql.gz"


def _plant(b: Path, world_readable: tuple[bytes, ...] = ()) -> None:
    """A real dump copied under each hostile name, mode 0600 unless named world-readable."""
    real = max(b.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)
    for i, raw in enumerate(NAMES):
        p = os.path.join(os.fsencode(b), raw)
        shutil.copyfile(real, p)
        os.chmod(p, 0o644 if raw in world_readable else 0o600)
        when = NEWER if raw == NEWEST else NEWER - 60 - i
        os.utime(p, (when, when))


@pytest.fixture(scope="module")
def named_run(seed_cluster: ThrowawayCluster, healthy_backups: Path,
              tmp_path_factory: pytest.TempPathFactory) -> ChecksRun:
    root = tmp_path_factory.mktemp("host-names")
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    targets = []
    for case, world in (("private", ()), ("world-readable", (NEWEST, b"directus_new\nline.sql.gz"))):
        h = scene.write_host(root / case / "host")
        b = root / case / "backups"
        shutil.copytree(healthy_backups, b)
        _plant(b, world)
        targets.append(demo.write_target_file(root / case / "t.toml", dsn, b, name=case, extra=h.toml()))
    # The offsite size match names the local dump of the same night: here the non-UTF-8 one.
    for case, differs in (("offsite", False), ("offsite-differs", True)):
        b = root / case / "backups"
        shutil.copytree(healthy_backups, b)
        _plant(b)
        remote = root / case / "offsite"
        remote.mkdir()
        local = Path(os.fsdecode(os.path.join(os.fsencode(b), NEWEST)))
        if not differs:
            scene.write_archive(remote, local, when=NEWER + 600)
        else:  # the upload packed another complete dump, ~40 KiB bigger: the check fails naming the local file
            head, rest = gzip.decompress(local.read_bytes()).split(b"\n", 1)
            pad = b"".join(b"-- " + os.urandom(32).hex().encode() + b"\n" for _ in range(600))
            scene.write_archive(remote, None, when=NEWER + 600,
                                member_bytes=gzip.compress(head + b"\n" + pad + rest, mtime=0))
        extra = scene.offsite_toml(remote, named_remote=False, max_age_hours=48)
        targets.append(demo.write_target_file(root / case / "t.toml", dsn, b, name=case, extra=extra))
    return run_checks(root / "run", targets, [CHECKS, OFFSITE])


def test_hostile_names_are_judged_and_green_when_private(named_run: ChecksRun) -> None:
    result = named_run["private"]
    # The database service check is skipped: this scene names no service to look for.
    result.assert_outcomes(passed=HOST_CHECKS - 1, skipped=1 + OFFSITE_CHECKS)
    assert "Traceback" not in named_run.stdout + named_run.stderr
    assert f"{7 + len(NAMES)} dump(s)" in result.text  # each hostile name counted, the newline one once
    [free] = [c for c in result.checks if c["name"] == FREE]
    [needed] = [v for k, v in free["evidence"] if k == "needed"]
    assert rf"x latest dump {named_run.workdir.parent}/private/backups/directus_\xff\xfe.sql.gz (" in needed, needed


def test_a_world_readable_hostile_name_is_named_escaped(named_run: ChecksRun) -> None:
    result = named_run["world-readable"]
    result.assert_outcomes(passed=HOST_CHECKS - 2, failed=1, skipped=1 + OFFSITE_CHECKS)
    assert result.failed() == {WORLD}
    [check] = [c for c in result.checks if c["name"] == WORLD]
    b = named_run.workdir.parent / "world-readable" / "backups"
    message = check["message"]
    assert "dumps readable by others: FAILED (2 file(s): " in message, message
    for raw in (NEWEST, b"directus_new\nline.sql.gz"):
        assert f"{b}/{NAMES[raw]} 0644" in message, message
    assert "\n" not in message.split("FAILED", 1)[1].split("; fix:")[0], message
    assert message.endswith("fix: chmod o-r them and put `umask 077` at the top of the backup script"), message
    assert not [c for c in named_run.doc["checks"] if c["outcome"] == "error"]


def test_the_offsite_match_names_a_hostile_local_dump_escaped(named_run: ChecksRun) -> None:
    same = named_run["offsite"]
    assert same.outcome(MATCH) == "passed", same.text
    [sizes] = [v for c in same.checks if c["name"] == MATCH for k, v in c["evidence"] if k == "sizes"]
    assert r"/offsite/backups/directus_\xff\xfe.sql.gz " in sizes, sizes
    differs = named_run["offsite-differs"]
    assert differs.outcome(MATCH) == "failed", differs.text
    [message] = [c["message"] for c in differs.checks if c["name"] == MATCH]
    assert r"/offsite-differs/backups/directus_\xff\xfe.sql.gz " in message, message
    assert not [c for c in named_run.doc["checks"] if c["outcome"] == "error"]
    html = (named_run.workdir / "reports" / "latest.html").read_text(encoding="utf-8")
    assert r"directus_\xff\xfe.sql.gz" in html


def test_a_cron_d_file_whose_name_is_not_utf8_is_named_not_a_traceback(seed_cluster: ThrowawayCluster,
                                                                       tmp_path: Path) -> None:
    """/etc/cron.d is read when no crontabs are configured: a private mount namespace puts a prepared
    directory there (the host's own is never touched), holding the job's file and one whose name is not
    UTF-8 (which testinfra cannot even put into a command)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a private mount namespace")
    h = scene.write_host(tmp_path / "host")
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    (cron_d / "pg-backup").write_text(f"0 2 * * * root {h.pg_backup}\n0 20 * * * root {h.to_gdrive}\n")
    hostile = os.path.join(os.fsencode(cron_d), b"pg\xffbackup")
    with open(hostile, "w") as f:
        f.write(f"0 3 * * * root {h.pg_backup}\n")
    extra = "".join(ln + "\n" for ln in h.toml().splitlines() if not ln.startswith("crontabs"))
    t = demo.write_target_file(tmp_path / "t.toml", seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE),
                               tmp_path, name="cron-d", extra=extra)
    report = tmp_path / "run.json"
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "--basetemp",
            str(tmp_path / "basetemp"), "--json", str(report), "--target", str(t), str(CHECKS)]
    proc = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$1" /etc/cron.d && shift && exec "$@"',
                           "sh", str(cron_d), *args], cwd=tmp_path, env=pytester_env(tmp_path),
                          capture_output=True, timeout=300, check=False)
    out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    if not report.is_file() and "mount" in out:
        pytest.skip(f"no private mount namespace here: {out[-300:]}")
    assert report.is_file(), out[-3000:]
    checks = json.loads(report.read_text())["checks"]
    assert not [c for c in checks if c["outcome"] == "error"] and "Traceback" not in out, out[-3000:]
    [schedules] = [c for c in checks if c["name"] == "test_cron_schedules_every_backup_job"]
    assert schedules["outcome"] == "passed", schedules
    [read] = [v for k, v in schedules["evidence"] if k == "crontabs read"]
    assert (r"/etc/cron.d/pg\xffbackup (file name is not valid UTF-8: not read (Debian's cron skips such "
            "names too); rename it)") in read, read
    assert "/etc/cron.d/pg-backup (2 entries" in read, read
