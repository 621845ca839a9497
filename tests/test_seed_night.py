"""The incident night, end to end through the demo command a new user runs.

Schema sandbox_tac (owned by workflow_admin) loses USAGE for the dump role, the real pg_dump
fails, gzip leaves its 20-byte empty stream, and the suite goes red on night one: the grant
check names the schema and the GRANT, the payload check names the file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "pgbackup-verify"), "demo", *args, "-p", "no:cacheprovider"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_healthy_demo_is_green(tmp_path: Path) -> None:
    proc = demo(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "pgbackup-verify: OK targets=demo" in proc.stdout


@pytest.mark.slow
def test_seed_night_fails_grant_and_payload_checks_with_the_fix(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--fault", "seed-night")
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    assert ("dump role USAGE on every schema: FAILED (1 of 3 schemas without USAGE for directus vs 0 allowed); "
            "fix (as workflow_admin or a superuser): GRANT USAGE ON SCHEMA sandbox_tac TO directus;") in out
    assert "latest dump payload: FAILED (directus_" in out
    assert "0 bytes decompressed, 20 bytes on disk, minimum 10000" in out
    assert "pgbackup-verify: FAILED targets=demo" in out


@pytest.mark.slow
def test_a_killed_demo_is_swept_by_the_next_run(tmp_path: Path) -> None:
    """SIGKILL mid-run leaves a running cluster and the demo dir; the next demo run removes both."""
    import signal
    import tempfile

    from pgbackup_verify.facts.drill.cluster import CLUSTER_PREFIX

    before = set(Path(tempfile.gettempdir()).glob("pgbv-*demo-*"))
    cmd = [str(BIN / "pgbackup-verify"), "demo", "--no-kuma", "-p", "no:cacheprovider", "-m", "drill"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("demo target:"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = set(Path(tempfile.gettempdir()).glob("pgbv-*demo-*")) - before
    assert any(p.name.startswith(f"{CLUSTER_PREFIX}demo-") for p in left), left
    again = demo(tmp_path, "--no-kuma", "-m", "sql")
    assert again.returncode == 0, again.stdout[-2000:]
    for p in left:
        assert f"swept leftover {p}" in again.stdout
        assert not p.exists()
