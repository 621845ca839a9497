"""The demo's Kuma: the seed's three monitors, checked and pushed to in one run."""

from __future__ import annotations

from pathlib import Path

from kuma_helpers import GRANT_CHECKS, MARKERS_INI, write_target
from pgbackup_verify_demo import kuma_demo

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_kuma.py"


def test_seed_monitors_are_checked_and_pushed_to(pytester, kuma, monkeypatch):
    for env, _covers in kuma_demo.SEED_MONITORS.values():
        monkeypatch.setenv(env, "")  # restored after the test; seed_monitors sets the real tokens
    demo = kuma_demo.DemoKuma(kuma.server, kuma.admin)
    demo.ids = kuma_demo.seed_monitors(kuma.admin)
    pytester.makefile(".ini", pytest=MARKERS_INI)
    pytester.makepyfile(test_grants=GRANT_CHECKS)
    target = write_target(pytester.path, demo.toml(), name="demo")
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider",
                                           "--reports-dir", str(pytester.path / "reports"),
                                           "test_grants.py", str(CHECKS))
    # Brand-new monitors, no beat written by hand: healthy. The 3 kuma checks of others' monitors
    # do not apply (the demo's monitors are all fed by this suite).
    result.assert_outcomes(passed=6, skipped=3)
    assert result.ret == 0
    assert demo.latest() == [
        "Kuma PG Dump Permission Guard: UP 'OK: 2/2 checks passed (grants, sql)'",
        "Kuma PG Backup Local: UP 'OK: 4/7 checks passed, 3 not applicable (dumps, drill, host, kuma)'",
        "Kuma PG Backup GDrive: DOWN 'no check covering offsite ran (9 selected in total)'",
    ]
