"""The [kuma] section: each mistake is one line naming the key; tokens never live in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbackup_verify.config import ConfigError, load_target
from pgbackup_verify.kuma.routing import tolerant_monitors, tolerant_read

BASE = """
[database]
dsn = "host=127.0.0.1 dbname=directus user=directus"
dump_role = "directus"

[backups]
directory = "{dir}"

[kuma]
url = "http://127.0.0.1:3001"
{kuma}
[[kuma.push]]
monitor = "PG Backup Local"
token_env = "KUMA_PUSH_LOCAL"
covers = ["dumps", "test_drill"]
{push}
"""


def write(tmp_path: Path, kuma: str = "", push: str = "", dir_: str | None = None) -> Path:
    p = tmp_path / "t.toml"
    p.write_text(BASE.format(dir=dir_ or tmp_path, kuma=kuma, push=push))
    return p


def test_kuma_section_loads_with_defaults(tmp_path: Path) -> None:
    k = load_target(write(tmp_path)).kuma
    assert k is not None and k.read_path == "socket" and k.stale_days == 7.0
    assert k.push[0].covers == ("dumps", "test_drill")
    db = tmp_path / "kuma.db"
    db.touch()
    assert load_target(write(tmp_path, kuma=f'db = "{db}"')).kuma.read_path == "db"


@pytest.mark.parametrize(("kuma", "push", "expected"), [
    ("", 'token = "abc123"', "[kuma.push #1].token: push tokens are secrets and never go in the target file"),
    ("", 'covers = ["dump"]', None),
    ('read = "sql"', "", "[kuma].read: 'sql' is neither 'db' nor 'socket'"),
    ('read = "db"', "", "[kuma].db: required when read = 'db'"),
    ('db = "nope.db"', "", "[kuma].db: file"),
    ("stale_days = 0", "", "[kuma].stale_days: 0.0 must be greater than 0; use e.g. 7.0"),
    ("", '[[kuma.push]]\nmonitor = "PG Backup Local"\ntoken_env = "X"\ncovers = ["dumps"]',
     "[kuma.push #1].monitor: 'PG Backup Local' is listed twice"),
    ("", '[[kuma.push]]\nmonitor = "G"\ntoken_env = "KUMA-TOKEN"\ncovers = ["grants"]',
     "[kuma.push #2].token_env: not an environment variable name (it looks like a value"),
    ("", '[[kuma.push]]\nmonitor = "G"\ntoken_env = "T"\ncovers = ["grant"]',
     "[kuma.push #2].covers: unknown check group 'grant'; did you mean 'grants'?"),
    ("", '[[kuma.push]]\nmonitor = "G"\ncovers = ["grants"]', "[kuma.push #2].token_env: required key is missing"),
    ("", '[[kuma.push]]\nmonitor = "G"\ntoken_env = "T"\ncovers = ["dumps drill"]',
     "[kuma.push #2].covers: unknown check group 'dumps drill'; use a marker"),
])
def test_kuma_mistake_is_named(tmp_path: Path, kuma: str, push: str, expected: str | None) -> None:
    path = write(tmp_path, kuma=kuma, push=push)
    if expected is None:  # a key of the first [[kuma.push]] entry redefined: invalid TOML, named as such
        expected = "invalid TOML"
    with pytest.raises(ConfigError) as e:
        load_target(path)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg
    assert "abc123" not in msg


PASTED = "kR4tJ8wQz2LmN7vXb5Yc"  # shaped like a Kuma push token


@pytest.mark.parametrize("value", [PASTED, "https://kuma.example/api/push/" + PASTED, PASTED + "-x"])
def test_a_token_pasted_into_token_env_is_refused_without_echo(tmp_path: Path, value: str) -> None:
    """Before: '[kuma.push #1].token_env: '<the token>' is not an environment variable name', or,
    for a token that is an identifier, accepted and echoed as 'env <the token> is not set'."""
    path = write(tmp_path)
    path.write_text(path.read_text().replace('token_env = "KUMA_PUSH_LOCAL"', f'token_env = "{value}"'))
    with pytest.raises(ConfigError) as e:
        load_target(path)
    assert "/t.toml': [kuma.push #1].token_env: not an environment variable name" in str(e.value)
    assert PASTED not in str(e.value)
    monitors, unreadable = tolerant_read(path)  # the config-error push cannot use it either
    assert monitors == [] and unreadable == ["[[kuma.push]] #1"]


@pytest.mark.parametrize("name", ["KUMA_PUSH_LOCAL", "kuma_push_local", "PushTokenBackups", "T"])
def test_variable_names_are_not_mistaken_for_tokens(tmp_path: Path, name: str) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace('token_env = "KUMA_PUSH_LOCAL"', f'token_env = "{name}"'))
    assert load_target(path).kuma.push[0].token_env == name


def test_other_markers_may_be_covered(tmp_path: Path) -> None:
    path = write(tmp_path, push='[[kuma.push]]\nmonitor = "SQL"\ntoken_env = "T"\ncovers = ["sql"]')
    assert load_target(path).kuma.push[1].covers == ("sql",)


def test_tolerant_read_finds_push_monitors_of_a_broken_file(tmp_path: Path) -> None:
    path = write(tmp_path, dir_=str(tmp_path / "missing"))
    path.write_text(path.read_text().replace("[database]", "[database\n"))  # TOML syntax error elsewhere
    [m] = tolerant_monitors(path)
    assert (m.name, m.token_env, m.covers, m.url) == ("PG Backup Local", "KUMA_PUSH_LOCAL",
                                                       ("dumps", "test_drill"), "http://127.0.0.1:3001")
    assert tolerant_monitors(tmp_path / "absent.toml") == []


def test_socket_read_without_a_login_is_one_line_and_exit_13(pytester, write_target, backups, monkeypatch) -> None:
    monkeypatch.delenv("KUMA_USERNAME", raising=False)
    monkeypatch.delenv("KUMA_PASSWORD", raising=False)
    target = write_target(backups, extra='\n[kuma]\nurl = "http://127.0.0.1:9"\nmonitors = ["PG Backup Local"]\n')
    checks = Path(__file__).resolve().parent.parent / "checks" / "test_kuma.py"
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", str(checks))
    assert result.ret == 13, result.stdout.str()[-1500:]
    result.stdout.fnmatch_lines(["KumaCredentialsMissing: Kuma login for http://127.0.0.1:9: env KUMA_USERNAME / "
                                 "KUMA_PASSWORD not set; export the Kuma login or set ?kuma?.db to read kuma.db "
                                 "instead"])
    assert "Traceback" not in result.stdout.str()
