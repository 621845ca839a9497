"""The shipped crontab line and systemd units run what the README says they run."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
    (tmp_path / "etc" / "env").write_text("export KUMA_EXAMPLE=1\n")
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


def test_cron_line_runs_the_checks_and_prints_one_summary_line(installed: Path) -> None:
    _, command = cron_command(installed)
    # Only the custom SQL check exists for this bare target; select it so the run is meaningful.
    proc = subprocess.run(["sh", "-c", command + " -m sql"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = [ln for ln in proc.stdout.splitlines() if ln.startswith("pgbackup-verify: ")]
    assert len(summary) == 1 and summary[0].startswith("pgbackup-verify: OK targets=directus"), proc.stdout
    assert (installed / "var" / "reports" / "latest.html").is_file()


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
