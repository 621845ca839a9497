"""A site extends the suite from its own conftest.py, without patching it: the hookspecs
(a concern, a report field, a Kuma routing rule) and the fixture factories (its own target)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TARGET = """[target]
name = "{name}"
[database]
dsn = "host=127.0.0.1 port=1 dbname=x user=y"
dump_role = "directus"
[backups]
directory = "{backups}"
[kuma]
url = "http://127.0.0.1:9"
[[kuma.push]]
monitor = "Guard"
token_env = "KUMA_EXT_GUARD"
covers = ["grants"]
[[kuma.push]]
monitor = "Tapes"
token_env = "KUMA_EXT_TAPES"
covers = ["tapes"]
"""

SITE_CONFTEST = """
import pytest

def pytest_pgbackup_verify_concerns(concerns):
    concerns["tapes"] = "checks of the tape library"

def pytest_pgbackup_verify_report_fields(config, target):
    return [("runbook", "https://wiki.example/runbooks/" + target.name)]

def pytest_pgbackup_verify_kuma_route(nodeid, groups, target):
    # The tape label check also tells the permission guard.
    return ["grants"] if "test_tape_label" in nodeid else []
"""

TAPE_CHECKS = """
import pytest

pytestmark = pytest.mark.tapes

def test_tape_label(target):
    assert False, "tape label of " + target.name + ": FAILED (none vs 1 expected); fix: label the tape"

def test_tape_drive(target):
    pass
"""


def write_target(base: Path, name: str) -> Path:
    (base / f"{name}-backups").mkdir()
    path = base / f"{name}.toml"
    path.write_text(TARGET.format(name=name, backups=base / f"{name}-backups"))
    return path


def test_site_hooks_add_a_concern_a_report_field_and_a_kuma_route(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMA_EXT_GUARD", "tok-guard")
    monkeypatch.setenv("KUMA_EXT_TAPES", "tok-tapes")
    pytester.makeconftest(SITE_CONFTEST)
    pytester.makepyfile(test_tapes=TAPE_CHECKS)
    target = write_target(pytester.path, "vault")
    result = pytester.runpytest_subprocess("--target", str(target), "--strict-markers", "-p", "no:cacheprovider",
                                           "--kuma-dry-run", "--json", "out.json")
    out = result.stdout.str()
    assert result.ret == 1, out  # the marker is known under --strict-markers: a verdict, not a usage error
    # The routing rule sent the tape label check to the permission guard as well as to its own monitor.
    assert "Guard: would push status=down msg='FAILED tapes: tape label of vault: none vs 1 expected'" in out
    assert "Tapes: would push status=down msg='FAILED tapes: tape label of vault: none vs 1 expected'" in out
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["fields"] == {"vault": [["runbook", "https://wiki.example/runbooks/vault"]]}
    assert {c["name"]: c["concern"] for c in doc["checks"]} == {"test_tape_label": "tapes",
                                                                 "test_tape_drive": "tapes"}
    html = (pytester.path / "reports" / "latest.html").read_text()
    assert "data-concern=\"tapes\"" in html or "data-concern='tapes'" in html
    assert "checks of the tape library" in html and "https://wiki.example/runbooks/vault" in html


def test_a_site_target_from_file_is_the_target_of_the_checks_below_it(pytester: pytest.Pytester) -> None:
    """`target = target_from_file(...)` in a site's conftest: the checks use it, with or without --target."""
    pytester.makeconftest("from pgbackup_verify import fixtures as factories\n"
                          "target = factories.target_from_file('staging.toml')\n")
    pytester.makepyfile(test_site="def test_which_target(target):\n"
                                  "    assert target.name == 'staging', target.name\n")
    write_target(pytester.path, "staging")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:pgbackup_verify.kuma.plugin",
                                           "--json", "out.json")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert [(c["nodeid"].split("::")[-1], c["target"]) for c in doc["checks"]] == [
        ("test_which_target[staging]", "staging")]
    other = write_target(pytester.path, "prod")
    result = pytester.runpytest_subprocess("--target", str(other), "-p", "no:cacheprovider",
                                           "-p", "no:pgbackup_verify.kuma.plugin")
    assert result.ret == 0, result.stdout.str()
    assert "pgbackup-verify target staging: OK (1 passed)" in result.stdout.str()
