"""Each section's validate(): a value its type allows but the checks cannot use is one exact line.

Fast: load_target on small TOML files, no cluster, no subprocess. The line names `[section].key`
and what to do, and is what the operator reads in cron mail and in the Kuma message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbackup_verify.config import ConfigError, iter_target_files, load_target

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
    ("max_shrink_ratio = 1\n", "[backups].max_shrink_ratio: 1.0 is not in [0, 1); use e.g. 0.2 for 20%"),
    ("max_shrink_ratio = 1.5\n", "[backups].max_shrink_ratio: 1.5 is not in [0, 1); use e.g. 0.2 for 20%"),
    ("max_shrink_ratio = -0.1\n", "[backups].max_shrink_ratio: -0.1 is not in [0, 1); use e.g. 0.2 for 20%"),
    ("max_age_hours = 0\n", "[backups].max_age_hours: must be greater than 0"),
    ("max_age_hours = -26\n", "[backups].max_age_hours: must be greater than 0"),
    ("retention_days = 0\n", "[backups].retention_days: must be greater than 0"),
    ("min_payload_bytes = 0\n", "[backups].min_payload_bytes: must be greater than 0"),
    ("min_payload_bytes = -1\n", "[backups].min_payload_bytes: must be greater than 0"),
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
    ("jobs = 0\n", "[drill].jobs: must be at least 1"),
    ("jobs = -2\n", "[drill].jobs: must be at least 1"),
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
