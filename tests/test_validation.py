"""Each section's validate(): a value its type allows but the checks cannot use is one exact line.

Mostly load_target on small TOML files (no cluster); the bad-input table also runs each row end to end
(a pytest subprocess without a database: exit 4, the one line, no traceback, the report saying so).
The line names the file, `[section].key` and what to do, and is what the operator reads in cron mail
and in the Kuma message.
"""

from __future__ import annotations

import codecs
import dataclasses
import html
import json
import os
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from pgbackup_verify.config import LIST_SECTIONS, SECTIONS, ConfigError, iter_target_files, load_target
from pgbackup_verify.config.loader import shown

BASE = """
[database]
dsn = "host=127.0.0.1 dbname=directus user=directus"
dump_role = "directus"

[backups]
directory = "{dir}"
"""

SQL_CHECK = """
[[sql_check]]
name = "{name}"
query = "SELECT 1 WHERE false"
expect = "no_rows"
fix = "drop it"
"""

KUMA = """
[kuma]
url = "http://127.0.0.1:3001"
"""

PUSH = """
[[kuma.push]]
monitor = "PG Backup Local"
token_env = "KUMA_PUSH_BACKUP_LOCAL"
covers = {covers}
"""


def load_error(tmp_path: Path, extra: str, backups: str = "") -> str:
    """The one-line ConfigError of BASE (plus `backups` keys in [backups]) and `extra`, minus its file prefix."""
    f = tmp_path / "t.toml"
    f.write_text(BASE.format(dir=tmp_path) + backups + extra)
    with pytest.raises(ConfigError) as exc:
        load_target(f)
    msg = str(exc.value)
    prefix = f"target file '{f}': "
    assert msg.startswith(prefix) and "\n" not in msg, msg
    return msg.removeprefix(prefix)


def test_the_base_file_loads(tmp_path: Path) -> None:
    """Every case below differs from a valid file by its one mistake."""
    f = tmp_path / "t.toml"
    f.write_text(BASE.format(dir=tmp_path) + SQL_CHECK.format(name="a") + SQL_CHECK.format(name="b")
                 + "[trends]\nmin_history = 3\npayload_window = 3\n"
                 + "[drill]\nmode = \"scratch\"\nserver_dsn = \"host=127.0.0.1 dbname=postgres user=drill\"\njobs = 1\n"
                 + KUMA + PUSH.format(covers='["dumps"]'))
    t = load_target(f)
    assert [c.name for c in t.sql_check] == ["a", "b"]
    assert t.kuma is not None and [p.covers for p in t.kuma.push] == [("dumps",)]


def test_duplicate_sql_check_names(tmp_path: Path) -> None:
    extra = SQL_CHECK.format(name="lock coverage") + SQL_CHECK.format(name="other") \
        + SQL_CHECK.format(name="lock coverage")
    assert load_error(tmp_path, extra) == (
        "[[sql_check]] #1.name: 'lock coverage' is used twice; give each check its own name")


@pytest.mark.parametrize(("backups", "expected"), [
    ("max_shrink_ratio = 1\n", "[backups].max_shrink_ratio: 1.0 is not in [0, 1); use e.g. 0.2"),
    ("max_shrink_ratio = 1.5\n", "[backups].max_shrink_ratio: 1.5 is not in [0, 1); use e.g. 0.2"),
    ("max_shrink_ratio = -0.1\n", "[backups].max_shrink_ratio: -0.1 is not in [0, 1); use e.g. 0.2"),
    ("max_age_hours = 0\n", "[backups].max_age_hours: 0.0 must be greater than 0; use e.g. 26.0"),
    ("max_age_hours = -26\n", "[backups].max_age_hours: -26.0 must be greater than 0; use e.g. 26.0"),
    ("retention_days = 0\n", "[backups].retention_days: 0 must be greater than 0; use e.g. 7"),
    ("min_payload_bytes = 0\n", "[backups].min_payload_bytes: 0 must be greater than 0; use e.g. 1024"),
    ("min_payload_bytes = -1\n", "[backups].min_payload_bytes: -1 must be greater than 0; use e.g. 1024"),
])
def test_backups_ranges(tmp_path: Path, backups: str, expected: str) -> None:
    assert load_error(tmp_path, "", backups) == expected


def test_backups_bounds_themselves_are_allowed(tmp_path: Path) -> None:
    """0 is a valid shrink ratio (no shrink allowed); the ranges above are not off by one."""
    f = tmp_path / "t.toml"
    f.write_text(BASE.format(dir=tmp_path) + "max_shrink_ratio = 0\nmax_age_hours = 0.5\nretention_days = 1\n"
                 "min_payload_bytes = 1\n")
    b = load_target(f).backups
    assert (b.max_shrink_ratio, b.max_age_hours, b.retention_days, b.min_payload_bytes) == (0.0, 0.5, 1, 1)


def test_trends_min_history_above_the_window(tmp_path: Path) -> None:
    assert load_error(tmp_path, "[trends]\npayload_window = 3\nmin_history = 5\n") == (
        "[trends].min_history: 5 is more than payload_window 3; lower it or widen the window")


@pytest.mark.parametrize(("drill", "expected"), [
    ('source = "offsite"\n',
     "[drill].source: 'offsite' needs an [offsite] section to read the archive from; "
     'add one or use source = "local"'),
    ('mode = "scratch"\n',
     "[drill].server_dsn: required when mode = 'scratch'; give the server the drill may create "
     "restore_drill_* databases on"),
    ('mode = "scratch"\nserver_dsn = "host=127.0.0.1 dbname=postgres user=drill password=Dr1ll-S3cret"\n',
     "[drill].server_dsn: contains a password; remove it and use PGPASSWORD or ~/.pgpass"),
    ("jobs = 0\n", "[drill].jobs: 0 must be at least 1; use e.g. 2"),
    ("jobs = -2\n", "[drill].jobs: -2 must be at least 1; use e.g. 2"),
])
def test_drill_mistakes(tmp_path: Path, drill: str, expected: str) -> None:
    msg = load_error(tmp_path, "[drill]\n" + drill)
    assert msg == expected
    assert "Dr1ll-S3cret" not in msg


def test_kuma_push_with_empty_covers(tmp_path: Path) -> None:
    extra = KUMA + PUSH.format(covers='["dumps"]').replace("PG Backup Local", "other") + PUSH.format(covers="[]")
    assert load_error(tmp_path, extra) == (
        "[kuma.push #2].covers: empty; list the markers or check modules this monitor reports")


@pytest.mark.parametrize(("extra", "expected"), [
    (SQL_CHECK.format(name="x").replace("[[sql_check]]", "[sql_check]"),
     "[sql_check]: write it as an array of tables, [[sql_check]]"),
    # The value is not echoed: a single [kuma.push] table may hold a pasted push token.
    (KUMA + PUSH.format(covers='["dumps"]').replace("[[kuma.push]]", "[kuma.push]") + 'token = "pUsh-T0ken"\n',
     "[kuma].push: write it as an array of tables, [[kuma.push]]"),
])
def test_an_array_of_tables_written_as_a_table(tmp_path: Path, extra: str, expected: str) -> None:
    msg = load_error(tmp_path, extra)
    assert msg == expected
    assert "pUsh-T0ken" not in msg


def test_an_empty_target_directory(tmp_path: Path) -> None:
    d = tmp_path / "targets"
    d.mkdir()
    (d / "README").write_text("one *.toml per host\n")  # anything but a target file still counts as empty
    with pytest.raises(ConfigError) as exc:
        iter_target_files(d)
    assert str(exc.value) == f"target directory '{d}' holds no *.toml file; add one per host"
    assert iter_target_files(d, strict=False) == []  # the Kuma plugin's tolerant read: nothing to push to
    (d / "b.toml").write_text("")
    (d / "a.toml").write_text("")
    assert iter_target_files(d) == [d / "a.toml", d / "b.toml"]



# ---------------------------------------------------------------------------------------------------------
# Bad input, end to end: each row is refused by load_target with one exact line, and a run given that file
# exits 4 with that line alone on stderr, no traceback, and latest.html/json saying NOT CHECKED (replacing a
# previous run's OK). The table is the closing note's: input -> exit -> first line.

def _toml(extra: str = "", backups: str = "", database: str = "") -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        f = d / "t.toml"
        text = BASE.format(dir=d).replace('dump_role = "directus"\n', 'dump_role = "directus"\n' + database)
        f.write_text(text + backups + extra)
        return f
    return write


def _bytes(make: Callable[[bytes], bytes], name: bytes = b"t.toml") -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        f = Path(os.fsdecode(os.fsencode(d) + b"/" + name))
        f.write_bytes(make(BASE.format(dir=d).encode()))
        return f
    return write


def _fifo(d: Path) -> Path:
    f = d / "t.toml"
    os.mkfifo(f)
    return f


SITE_CONCERNS = "(a site adds its own with the pytest_pgbackup_verify_concerns hook)"
# Only the run knows its concern registry (a site's conftest may add concerns): load_target accepts these.
RUN_ONLY = ("sql_check concern typo", "sql_check concern unknown to the run")


def _sql(**keys: str) -> str:
    entry = {"name": '"x"', "query": '"SELECT 1 WHERE false"', "expect": '"no_rows"', "fix": '"drop it"', **keys}
    return "[[sql_check]]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items() if v)


# id -> (how the file is made, what follows "target file '<file>'" in the line)
BAD_INPUT: dict[str, tuple[Callable[[Path], Path], str]] = {
    "connect_timeout = -10": (_toml(database="connect_timeout = -10\n"),
                              ": [database].connect_timeout: -10 must be greater than 0; use e.g. 10"),
    "connect_timeout = 0": (_toml(database="connect_timeout = 0\n"),
                            ": [database].connect_timeout: 0 must be greater than 0; use e.g. 10"),
    "max_age_hours = nan": (_toml(backups="max_age_hours = nan\n"),
                            ": [backups].max_age_hours: nan is not a finite number; use e.g. 26.0"),
    "max_age_hours = inf": (_toml(backups="max_age_hours = inf\n"),
                            ": [backups].max_age_hours: inf is not a finite number; use e.g. 26.0"),
    "min_good_dumps = -3": (_toml(backups="min_good_dumps = -3\n"),
                            ": [backups].min_good_dumps: -3 must be at least 1; use e.g. 7"),
    "stray_max_bytes = -1": (_toml(backups="stray_max_bytes = -1\n"),
                             ": [backups].stray_max_bytes: -1 must be at least 0; use e.g. 1024"),
    "sql_check timeout_s = 0": (_toml(_sql(timeout_s="0")),
                                ": [sql_check #1].timeout_s: 0.0 must be greater than 0; use e.g. 30.0"),
    "drill min_views = -1": (_toml("[drill]\nmin_views = -1\n"),
                             ": [drill].min_views: -1 must be at least 0; use e.g. 0"),
    "drill stale_minutes = -inf": (_toml("[drill]\nstale_minutes = -inf\n"),
                                   ": [drill].stale_minutes: -inf is not a finite number; use e.g. 240.0"),
    "offsite size_tolerance = 1": (_toml('[offsite]\nremote = "r:b"\nsize_tolerance = 1\n'),
                                   ": [offsite].size_tolerance: 1.0 is not in [0, 1); use e.g. 0.05"),
    "kuma push_timeout = nan": (_toml('[kuma]\nurl = "http://127.0.0.1:9"\npush_timeout = nan\n'),
                                ": [kuma].push_timeout: nan is not a finite number; use e.g. 5.0"),
    "pattern = ''": (_toml(backups='pattern = ""\n'),
                     ": [backups].pattern: glob '' is empty; use e.g. *.sql.gz"),
    "pattern with a directory": (
        _toml(backups='pattern = "/srv/backups/*.sql.gz"\n'),
        ": [backups].pattern: glob '/srv/backups/*.sql.gz' contains '/', but it is matched against file names "
        "only: drop the directory part; use e.g. *.sql.gz"),
    "pattern with an open [": (
        _toml(backups='pattern = "db-[0-9*.sql.gz"\n'),
        ": [backups].pattern: glob 'db-[0-9*.sql.gz' has a '[' at position 4 that is never closed; write [[] "
        "for a literal '['; use e.g. *.sql.gz"),
    "offsite archive_glob with a directory": (
        _toml('[offsite]\nremote = "r:b"\narchive_glob = "b/*.tar.gz"\n'),
        ": [offsite].archive_glob: glob 'b/*.tar.gz' contains '/', but it is matched against file names only: "
        "drop the directory part; use e.g. vps-backup-*.tar.gz"),
    "host retired_scripts with an open [": (
        _toml('[host]\nretired_scripts = ["/opt/[old/*.sh"]\n'),
        ": [host].retired_scripts: glob '/opt/[old/*.sh' has a '[' at position 6 that is never closed; write [[] "
        "for a literal '['"),
    "sql_check concern typo": (_toml(_sql(concern='"grnats"')),
                               ": [[sql_check]] 'x'.concern: 'grnats' is not a concern; did you mean 'grants'? "
                               f"{SITE_CONCERNS}"),
    "sql_check concern not a name": (
        _toml(_sql(concern='"my checks"')),
        ": [[sql_check]] 'x'.concern: 'my checks' is not a concern; use one of grants, dumps, drill, kuma, host, "
        "offsite, sql"),
    "sql_check concern unknown to the run": (
        _toml(_sql(concern='"billing"')),
        ": [[sql_check]] 'x'.concern: 'billing' is not a concern; use one of grants, dumps, drill, kuma, host, "
        f"offsite, sql {SITE_CONCERNS}"),
    "sql_check #2 without query": (_toml(_sql() + _sql(name='"y"', query="")),
                                   ": [sql_check #2].query: required key is missing; add it (SQL run in the "
                                   "read-only audit transaction)"),
    "binary file": (_bytes(lambda _: b"\x7fELF\x02\x01\x01" + bytes(64)),
                    " is a binary file, not TOML; pass the target file (see target.example.toml)"),
    "not UTF-8": (_bytes(lambda b: b"# caf\xe9 backups\n" + b),
                  " is not UTF-8 (byte 0xe9 on line 1); save it as UTF-8"),
    "UTF-8 with BOM": (_bytes(lambda b: codecs.BOM_UTF8 + b),
                       " starts with a byte-order mark, which TOML does not allow; save it as UTF-8 without BOM"),
    "UTF-16": (_bytes(lambda b: b.decode().encode("utf-16")), " is UTF-16 text; save it as UTF-8"),
    "oversized": (_bytes(lambda b: b + b"# padding\n" * 120_000),
                  " is larger than 1024 KiB; a target file is a few KB of TOML: pass the right file"),
    "a FIFO": (_fifo, " is not a regular file; pass a TOML file or a directory of them"),
    "file name not UTF-8": (_bytes(lambda b: b, name=b"caf\xe9.toml"),
                            ": [target].name: the file name is not UTF-8, and reports need a readable name; "
                            'add name = "..." or rename the file'),
}


@pytest.mark.parametrize("case", [c for c in BAD_INPUT if c not in RUN_ONLY])
def test_bad_input_is_one_exact_line(tmp_path: Path, case: str) -> None:
    make, line = BAD_INPUT[case]
    f = make(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_target(f)
    assert str(exc.value) == f"target file '{shown(f)}'{line}"


PROBE = "def test_probe(target):\n    pass\n"


def run_refused(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list[str]]:
    """A run over a reports directory whose last run was green: its result and stderr's non-empty lines."""
    reports = pytester.path / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "latest.html").write_text("<h2>Backup health: OK</h2>")
    (reports / "latest.json").write_text('{"status": "OK"}')
    pytester.makepyfile(test_probe=PROBE)
    # In process: a subprocess per row would cost seconds each; the CLI's own process is in test_cli.py.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    return result, [ln for ln in result.stderr.lines if ln.strip()]


def assert_not_checked(reports: Path, line: str) -> None:
    page = html.unescape((reports / "latest.html").read_text())
    assert "Backup health: OK" not in page
    assert f"Backup health: NOT CHECKED \u2014 config error: {line}</h2>" in page
    doc = json.loads((reports / "latest.json").read_text())
    assert (doc["status"], doc["exit_status"], doc["abort"]) == ("FAILED", 4, f"config error: {line}")
    assert doc["checks"] == []
    assert "NOT CHECKED: config error:" in (reports / "latest.xml").read_text()


def test_a_site_concern_is_accepted_by_the_run(pytester: pytest.Pytester) -> None:
    """The registry check is the run's: a concern a site's hook adds is fine for a [[sql_check]]."""
    pytester.makeconftest("def pytest_pgbackup_verify_concerns(concerns):\n    concerns['billing'] = 'invoices'\n")
    pytester.makepyfile(test_probe=PROBE)
    f = BAD_INPUT["sql_check concern unknown to the run"][0](pytester.path)
    load_target(f)
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "--target", str(f)).assert_outcomes(passed=1)


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_run_exits_4_with_one_line_and_a_report_saying_so(pytester: pytest.Pytester, case: str) -> None:
    make, line = BAD_INPUT[case]
    f = make(pytester.path)
    expected = f"target file '{shown(f)}'{line}"
    result, lines = run_refused(pytester, "--target", os.fsdecode(f))
    assert result.ret == 4, result.stdout.str()
    assert lines == [f"ERROR: {expected}"]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert_not_checked(pytester.path / "reports", expected)


REQUIRED = {"offsite": 'remote = "r:b"\n', "kuma": 'url = "http://127.0.0.1:9"\n',
            "sql_check": 'name = "x"\nquery = "SELECT 1"\nexpect = "no_rows"\nfix = "f"\n'}


def with_key(d: Path, section: str, key: str, value: str) -> str:
    """BASE with `key = value` in `section` (and whatever else that section requires)."""
    text = BASE.format(dir=d)
    line = f"{key} = {value}\n"
    if section in ("database", "backups"):
        anchor = 'dump_role = "directus"\n' if section == "database" else f'directory = "{d}"\n'
        return text.replace(anchor, anchor + line)
    header = f"[[{section}]]" if section in LIST_SECTIONS else f"[{section}]"
    return f"{text}{header}\n{REQUIRED.get(section, '')}{line}"


def test_every_numeric_key_refuses_negative_nan_and_inf(tmp_path: Path) -> None:
    """A sweep over the section registry, so a key added later is covered without a new row: -1, NaN and
    +-infinity (TOML has those only for floats) are refused for every number, 0 where the key says > 0,
    each in one line naming the key and a value to use."""
    sections = [*((n, c) for n, (c, _) in SECTIONS.items()), *LIST_SECTIONS.items()]
    seen = set()
    for name, cls in sections:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] not in (int, float):
                continue
            bad = ["-1", *(["nan", "inf", "-inf"] if hints[f.name] is float else []),
                   *(["0"] if f.metadata.get("gt") == 0 else [])]
            for value in bad:
                target = tmp_path / "t.toml"
                target.write_text(with_key(tmp_path, name, f.name, value))
                with pytest.raises(ConfigError) as exc:
                    load_target(target)
                where = f"[{name} #1]" if name in LIST_SECTIONS else f"[{name}]"
                msg = str(exc.value)
                assert msg.startswith(f"target file '{target}': {where}.{f.name}: "), msg
                assert "; use e.g. " in msg and "\n" not in msg, msg
            seen.add(f"{name}.{f.name}")
    assert {"database.connect_timeout", "backups.max_age_hours", "sql_check.timeout_s", "drill.jobs",
            "kuma.grace_seconds", "offsite.min_archive_bytes", "trends.min_history"} <= seen


def test_a_broken_file_in_a_directory_fails_the_run_and_the_others_run(pytester: pytest.Pytester,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each host's Kuma monitor hears about its own host: the broken one's is read from its [kuma] alone."""
    targets = pytester.path / "targets"
    targets.mkdir()
    backups = pytester.path / "b"
    backups.mkdir()
    for name in ("alpha", "beta", "omega"):
        monkeypatch.setenv(f"KUMA_{name.upper()}", "token")
        kuma = KUMA + PUSH.format(covers='["dumps"]').replace("PG Backup Local", name).replace(
            "KUMA_PUSH_BACKUP_LOCAL", f"KUMA_{name.upper()}")
        text = BASE.format(dir=backups) + kuma
        if name == "beta":
            text = text.replace('dump_role = "directus"\n', 'dump_role = "directus"\nconnect_timeout = -10\n')
        (targets / f"{name}.toml").write_text(text)
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--target", str(targets), "--json", "run.json",
                                           "-m", "not slow", "-rfE", "--kuma-dry-run", timeout=60)
    line = f"target file '{targets / 'beta.toml'}': [database].connect_timeout: -10 must be greater than 0; use e.g. 10"
    assert result.ret == 4
    result.assert_outcomes(passed=2, failed=1)  # -m did not deselect the broken file
    out = result.stdout.str()
    assert "Traceback" not in out
    result.stdout.fnmatch_lines(["pgbackup-verify target alpha: OK (1 passed)",
                                 "pgbackup-verify target beta: FAILED (1 failed)",
                                 "pgbackup-verify target omega: OK (1 passed)",
                                 "pgbackup-verify: FAILED targets=alpha,beta,omega failed=1 error=0 skipped=0 passed=2 "
                                 "exit=4 *",
                                 "FAILED target_file_is_valid[[]beta] - ConfigError: target file *"])
    result.stdout.fnmatch_lines_random(["alpha: would push status=up msg='OK: 1/1 checks passed (dumps)'*",
                                        "beta: would push status=down msg='FAILED: ConfigError: target file *beta*",
                                        "omega: would push status=up msg='OK: 1/1 checks passed (dumps)'*"])
    doc = json.loads((pytester.path / "run.json").read_text())
    [broken] = [c for c in doc["checks"] if c["outcome"] != "passed"]
    assert (broken["target"], broken["outcome"], broken["message"]) == ("beta", "failed", f"ConfigError: {line}")
    assert "Backup health: FAILED" in (pytester.path / "reports" / "latest.html").read_text()


def test_every_file_of_a_directory_broken_is_a_refused_run(pytester: pytest.Pytester) -> None:
    targets = pytester.path / "targets"
    targets.mkdir()
    (targets / "a.toml").write_bytes(b"\xff\xfe\x00")
    (targets / "b.toml").write_text("[database\n")
    result, lines = run_refused(pytester, "--target", str(targets))
    assert result.ret == 4
    line = f"target file '{targets / 'a.toml'}' is UTF-16 text; save it as UTF-8"
    assert lines == [f"ERROR: {line}"]
    assert_not_checked(pytester.path / "reports", line)
