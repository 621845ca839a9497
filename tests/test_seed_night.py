"""The incident night, end to end through the demo command a new user runs.

Schema sandbox_tac (owned by workflow_admin) loses USAGE for the dump role, the real pg_dump
fails, gzip leaves its 20-byte empty stream, and the suite goes red on night one: the grant
check names the schema and the GRANT, the payload check names the file.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgbackup_verify.facts.drill.cluster import CLUSTER_PREFIX, OWNER_FILE, read_private
from pgbackup_verify.facts.drill.owner import parse_mark

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "pgbackup-verify"), "demo", *args, "-p", "no:cacheprovider"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


@dataclass
class KilledThenHealthy:
    killed_pid: int
    left: set[Path]
    again: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def killed_then_healthy(tmp_path_factory: pytest.TempPathFactory) -> KilledThenHealthy:
    """SIGKILL a demo mid-run (it leaves a running cluster and the demo dir), then run the healthy demo.

    The healthy demo a new user runs is also the next run that must sweep the killed one's leftovers.
    """
    tmp_path = tmp_path_factory.mktemp("demo")
    cmd = [str(BIN / "pgbackup-verify"), "demo", "--no-kuma", "-p", "no:cacheprovider", "-m", "drill"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("demo target:"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Only what the killed demo made: other demos (parallel workers, other runs) may be alive now.
    left = {p for p in Path(tempfile.gettempdir()).glob("pgbv-*demo-*")
            if (mark := parse_mark(read_private(p / OWNER_FILE))) is not None and mark.pid == proc.pid}
    return KilledThenHealthy(proc.pid, left, demo(tmp_path))


def test_healthy_demo_is_green(killed_then_healthy: KilledThenHealthy) -> None:
    proc = killed_then_healthy.again
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "pgbackup-verify: OK targets=demo" in proc.stdout
    # The demo's own Kuma: every seed monitor was pushed UP.
    for monitor in ("PG Dump Permission Guard", "PG Backup Local", "PG Backup GDrive"):
        assert f"Kuma {monitor}: UP 'OK: " in proc.stdout, proc.stdout[-3000:]


def test_seed_night_fails_grant_and_payload_checks_with_the_fix(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--fault", "seed-night")
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    assert ("dump role USAGE on every schema: FAILED (1 of 3 schemas without USAGE for directus vs 0 allowed); "
            "fix (as workflow_admin or a superuser): GRANT USAGE ON SCHEMA sandbox_tac TO directus;") in out
    assert "latest dump payload: FAILED (directus_" in out
    assert ("0 bytes decompressed from gzip, 20 bytes on disk, minimum 10000); likely cause: grants \u00b7 dump role "
            "USAGE on every schema (sandbox_tac); fix: ") in out
    assert "pgbackup-verify: FAILED targets=demo" in out
    # One fault, one red line per concern that holds a copy of it: the grant (the cause), the dump, the offsite copy;
    # grants first, whatever order pytest ran them in.
    red = [line.split(" \u00b7 ")[0] for line in out.splitlines() if line.startswith(("FAILED demo", "ERROR demo"))]
    assert red == ["FAILED demo grants", "FAILED demo dumps", "FAILED demo offsite"], out[-5000:]
    # ...and Kuma hears about it that night, in words naming the schema (the dump's monitor through its cause).
    assert "Kuma PG Dump Permission Guard: DOWN 'FAILED grants: USAGE missing on sandbox_tac for directus'" in out
    assert re.search(r"Kuma PG Backup Local: DOWN 'FAILED dumps: directus_\S+ 0 B of dump, minimum 9.8 KiB; "
                     r"likely cause: grants \u00b7 dump role USAGE on every schema \(sandbox_tac\) \(\d+ not judged\)'",
                     out), out[-3000:]
    kuma = [line for line in out.splitlines() if line.startswith("Kuma ")]
    assert kuma and not [k for k in kuma if re.search(r"\btest_\w+", k)], kuma  # never a function name
    assert all(len(k.split(": ", 1)[1]) <= 190 + 9 for k in kuma), kuma  # `DOWN '...'` around the msg
    # Ordered by cause: the grants finding opens the report, the dump's before the drill's.
    assert out.index("dump role USAGE on every schema: FAILED") < out.index("latest dump payload: FAILED")
    # No fix advises what is already true: the only GRANT named is the one schema lacking USAGE, and the
    # drill of the 20-byte dump is not judged (naming the payload finding) instead of advising grants.
    doc = json.loads((tmp_path / "reports" / "latest.json").read_text())
    text = out + json.dumps(doc)
    assert set(re.findall(r"GRANT USAGE ON SCHEMA (\w+)", text, re.I)) == {"sandbox_tac"}, text[-3000:]
    assert "grant the dump role USAGE on" not in text
    drill = [c for c in doc["checks"] if c["concern"] == "drill" and c["kind"] == "not judged"]
    assert drill and all(c["message"].startswith("not judged: latest dump payload: FAILED (directus_")
                         for c in drill), drill
    assert [c["status"] for c in doc["concerns"] if c["concern"] == "drill"] == ["NOT JUDGED"]
    assert [c["concern"] for c in doc["concerns"]][:3] == ["grants", "dumps", "drill"]


def test_a_killed_demo_is_swept_by_the_next_run(killed_then_healthy: KilledThenHealthy) -> None:
    """SIGKILL mid-run leaves a running cluster and the demo dir; the next demo run removes both."""
    left, again = killed_then_healthy.left, killed_then_healthy.again
    assert any(p.name.startswith(f"{CLUSTER_PREFIX}demo-") for p in left), left
    assert any(p.name.startswith("pgbv-demo-") for p in left), left
    assert again.returncode == 0, again.stdout[-2000:]
    for p in left:
        assert f"swept leftover {p}" in again.stdout, again.stdout[-3000:]
        assert not p.exists()
