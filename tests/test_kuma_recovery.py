"""A monitor this suite feeds recovers by itself: fresh monitors, a red night and the healthy night
after it, each a real run of the shipped kuma checks pushing to a real Kuma, nothing done by hand."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from kuma_helpers import DUMP_CHECKS, MARKERS_INI, beats, kuma_toml, new_monitor, write_target

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_kuma.py"
UP, DOWN = 1, 0
HOUR = 3600


def night(pytester: pytest.Pytester, target: Path, broken: bool) -> pytest.RunResult:
    pytester.makepyfile(test_dumps=DUMP_CHECKS.format(ok=not broken))
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "-rA",
                                         "--reports-dir", str(pytester.path / "reports"), "test_dumps.py",
                                         str(CHECKS))


@pytest.mark.parametrize("read", ["db", "socket"])
def test_red_night_then_healthy_night_is_up_without_a_manual_step(pytester, kuma, monkeypatch, read):
    note = kuma.admin.add_webhook_notification(f"Ops {secrets.token_hex(3)}")
    local = new_monitor(kuma, monkeypatch, f"PG Backup Local {secrets.token_hex(3)}", "KUMA_PUSH_RECOVERY",
                        interval=HOUR, notifications=[note])
    monkeypatch.setenv("KUMA_USERNAME", kuma.username)
    monkeypatch.setenv("KUMA_PASSWORD", kuma.password)
    pytester.makefile(".ini", pytest=MARKERS_INI)
    how = f'db = "{kuma.server.db_path}"' if read == "db" else 'read = "socket"'
    target = write_target(pytester.path, kuma_toml(kuma.url, [(local, ["dumps", "kuma"])], extra=how))

    first = night(pytester, target, broken=False)  # a brand-new monitor: no beat at all yet
    assert first.ret == 0, first.stdout.str()
    first.assert_outcomes(passed=6, skipped=3)  # 3 kuma checks judge only monitors fed by others
    assert beats(kuma, local.id)[0][:2] == (UP, "OK: 6/9 checks passed, 3 not applicable (dumps, kuma)")

    red = night(pytester, target, broken=True)
    assert red.ret == 1
    assert beats(kuma, local.id)[0][:2] == (DOWN, "FAILED dumps: latest dump: 20 B vs 10000 B")

    healthy = night(pytester, target, broken=False)  # Kuma's latest beat is last night's DOWN
    assert healthy.ret == 0, healthy.stdout.str()
    doc = json.loads((pytester.path / "reports" / "latest.json").read_text())
    [schedule] = [c for c in doc["checks"] if c["name"] == "test_previous_push_of_this_suite_arrived_on_schedule"]
    assert schedule["outcome"] == "passed"
    assert "(DOWN; limit 3900 s = interval 3600 s + grace 300 s)" in schedule["evidence"][0][1]
    assert [b[0] for b in beats(kuma, local.id)] == [UP, DOWN, UP]  # three pushes, nothing else
