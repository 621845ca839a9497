"""The shipped crontab line and systemd units run what the README says they run, as written."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgbackup_verify_demo import demo

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
VENV_BIN = Path(sys.executable).parent


def localize(text: str, tmp: Path) -> str:
    """Point the example's install paths at this venv and a temp dir."""
    return (text.replace("/opt/pgbackup-verify/venv/bin", str(VENV_BIN))
            .replace("/etc/pgbackup-verify", str(tmp / "etc"))
            .replace("/var/lib/pgbackup-verify", str(tmp / "var"))
            .replace("/run/pgbackup-verify", str(tmp / "run")))


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """The install directories of the example, under a temp dir; no target yet (the text checks need none)."""
    (tmp_path / "etc" / "targets").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "etc" / "env").write_text("KUMA_EXAMPLE=1\n")
    (tmp_path / "b").mkdir()
    return tmp_path


@pytest.fixture
def installed(layout: Path, seed_cluster: ThrowawayCluster) -> Path:
    """The layout with a target of the seed database: for the tests that really run the cron line."""
    demo.write_target_file(layout / "etc" / "targets" / "directus.toml",
                           seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE), layout / "b", name="directus")
    return layout


def cron_command(tmp: Path) -> tuple[str, str]:
    line = next(ln for ln in (DEPLOY / "crontab.example").read_text().splitlines()
                if ln.strip() and not ln.startswith("#"))
    fields = line.split(None, 5)
    return " ".join(fields[:5]), localize(fields[5], tmp)


def test_cron_schedule_is_five_valid_fields(layout: Path) -> None:
    schedule, _ = cron_command(layout)
    minute, hour, dom, month, dow = schedule.split()
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert (dom, month, dow) == ("*", "*", "*")


PASSWORD = "Cr0n-S3cret pass"  # a space too: the env file's value is taken whole


@pytest.fixture(scope="module")
def password_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThrowawayCluster, Path]]:
    """The seed database with a week of healthy dumps, in its own cluster whose dump role must give a
    password (scram-sha-256) over TCP, the way a production host is set up."""
    with ThrowawayCluster(tag="cron-") as c:
        demo.build_seed_database(c)
        backups = tmp_path_factory.mktemp("cron-backups")
        demo.write_nightly_dumps(c, backups)
        hba = c.root / "data" / "pg_hba.conf"
        hba.write_text(f"host all {demo.DUMP_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {demo.DUMP_ROLE} PASSWORD '{PASSWORD}'")
            conn.execute("SELECT pg_reload_conf()")
        yield c, backups


def test_cron_line_as_written_is_silent_and_green_with_a_password(layout: Path, password_host: tuple) -> None:
    """The exact crontab line (paths moved to a temp dir), run by sh with an empty environment, as cron
    would: the password reaches the run only through `set -a`, the working directory does not exist
    yet, and a green run prints nothing at all."""
    cluster, backups = password_host
    shutil.rmtree(layout / "var")  # a cron-only install: nobody created it
    (layout / "etc" / "env").write_text(f'PGPASSWORD="{PASSWORD}"\n')  # quoted: read by sh and by systemd alike
    (layout / "etc" / "env").chmod(0o600)
    demo.write_target_file(layout / "etc" / "targets" / "directus.toml", cluster.dsn(demo.DBNAME, demo.DUMP_ROLE),
                           backups, name="directus",
                           # Its own drill lock: other runs on this machine must not make this one wait.
                           extra=f'[drill]\nlock_file = "{layout / "run" / "drill.lock"}"\n')
    _, command = cron_command(layout)
    assert re.search(r"set -a && \. \S+/env && set \+a && ", command), command
    proc = subprocess.run(["env", "-i", "/bin/sh", "-c", command], capture_output=True, text=True, timeout=600)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    doc = json.loads((layout / "var" / "reports" / "latest.json").read_text())
    assert doc["status"] == "OK" and doc["counts"]["passed"] > 10, doc["counts"]
    assert PASSWORD not in "".join(p.read_text(errors="replace") for p in (layout / "var" / "reports").iterdir()
                                   if p.is_file())

    # Without `set -a` (the line as it was) the password never reaches the run: not green, and said so.
    proc = subprocess.run(["env", "-i", "/bin/sh", "-c", command.replace("set -a && ", "")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 11, proc.stdout[-2000:]
    assert "pgbackup-verify: FAILED targets=directus" in proc.stdout


def test_cron_line_refuses_an_overlapping_run(installed: Path) -> None:
    _, command = cron_command(installed)
    lock = installed / "run" / "run.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    finally:
        os.close(fd)
    assert proc.returncode == 14
    assert re.search(r"lock .*run.lock. is held by another pgbackup-verify run", proc.stderr)


def test_systemd_service_runs_the_same_command_as_cron() -> None:
    unit = (DEPLOY / "pgbackup-verify.service").read_text().replace("\\\n", " ")
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    cron = next(ln for ln in (DEPLOY / "crontab.example").read_text().splitlines() if ln[:1].isdigit())
    assert exec_start == cron.split(None, 5)[5].split("&&")[-1].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(layout: Path) -> None:
    units = layout / "units"
    units.mkdir()
    for name in ("pgbackup-verify.service", "pgbackup-verify.timer"):
        (units / name).write_text(localize((DEPLOY / name).read_text(), layout))
    proc = subprocess.run(["systemd-analyze", "verify", *(str(units / n) for n in os.listdir(units))],
                          capture_output=True, text=True, timeout=60)
    problems = [ln for ln in proc.stderr.splitlines() if "pgbackup-verify" in ln]
    assert not problems, proc.stderr
