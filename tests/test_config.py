"""The target file: each mistake is one line naming the key, exit code 4, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbackup_verify.config import ConfigError, load_target

GOOD = """
[database]
dsn = "host=127.0.0.1 dbname=directus user=directus"
dump_role = "directus"

[backups]
directory = "{dir}"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.toml"
    p.write_text(text.format(dir=tmp_path))
    return p


def test_minimal_target_loads_with_defaults(tmp_path: Path) -> None:
    t = load_target(write(tmp_path, GOOD))
    assert t.name == "t"
    assert t.backups.max_age_hours == 26.0
    assert t.database.exclude_schemas == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("dump_role", "dupm_role"), "[database].dupm_role: unknown key; did you mean 'dump_role'?"),
        (GOOD.replace('dump_role = "directus"', ""), "[database].dump_role: required key is missing"),
        (GOOD + "max_age_hours = '3x'\n", "[backups].max_age_hours: expected a number, got '3x'"),
        (GOOD.replace("{dir}", "{dir}/nope"), "[backups].directory: directory"),
        (GOOD.replace("user=directus", "user=directus password=s3cret"), "[database].dsn: contains a password"),
        (GOOD + "[bakups]\n", "[bakups]: unknown section; did you mean [backups]?"),
        ("[database\n", "invalid TOML"),
    ],
)
def test_mistake_is_named(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_target(write(tmp_path, text))
    msg = str(exc.value)
    assert expected in msg
    assert "\n" not in msg
    assert "s3cret" not in msg


def test_typo_exits_4_with_one_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    target = write(tmp_path, GOOD.replace("dump_role", "dupm_role"))
    pytester.makepyfile("def test_x(target): pass")
    result = pytester.runpytest_subprocess("--target", str(target))
    assert result.ret == 4
    lines = [ln for ln in result.stderr.lines if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ERROR: target file '{target}': [database].dupm_role: unknown key; did you mean")
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_target_from_env_and_ini(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write(tmp_path, GOOD)
    pytester.makepyfile("def test_x(target): assert target.name == 't'")
    monkeypatch.setenv("PGBACKUP_VERIFY_TARGET", str(target))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    monkeypatch.delenv("PGBACKUP_VERIFY_TARGET")
    pytester.makeini(f"[pytest]\npgbackup_verify_target = {target}\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_no_target_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(target): pass")
    result = pytester.runpytest_subprocess()
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: no target file*--target FILE*"])


def test_target_with_a_space_keeps_the_checkouts_ini(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """`pytest --target FILE` (FILE outside the checkout) runs the checks, not the self-tests.

    pytest picks its rootdir before plugin options exist and would take FILE for a test path.
    """
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = write(outside, GOOD)
    pytester.makeini("[pytest]\ntestpaths = checks\naddopts = -p no:cacheprovider\n")
    pytester.mkdir("checks")
    pytester.mkdir("tests")
    (pytester.path / "checks" / "test_check.py").write_text("def test_c(target): assert target.name == 't'\n")
    (pytester.path / "tests" / "test_self.py").write_text("def test_self(): raise AssertionError('self-test ran')\n")
    result = pytester.runpytest_subprocess("--target", str(target))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"rootdir: {pytester.path}", "configfile: tox.ini"])



def test_the_cli_roots_the_run_without_the_reroot_hook(tmp_path: Path) -> None:
    """`pgbackup-verify --target FILE` names its rootdir and ini file itself. Installed from a wheel,
    no ini file sits above the checks, and pytest took FILE for a test path and read the ini file
    next to it; with the private-API hook that mends plain `pytest --target FILE` switched off,
    that ini file is still never read."""
    import shutil
    import subprocess
    import sys

    from pgbackup_verify.cli import checks_dir

    package = tmp_path / "site-packages" / "pgbackup_verify"  # as installed: no ini file above
    shutil.copytree(checks_dir(), package / "checks")
    site = tmp_path / "etc"
    site.mkdir()
    (site / "pytest.ini").write_text("[pytest]\naddopts = --the-ini-next-to-the-target-was-read\n")
    target = write(site, GOOD + '\n[[sql_check]]\nname = "one"\nquery = "SELECT 1"\nexpect = "no_rows"\nfix = "look"\n')
    script = ("import sys, pathlib, pgbackup_verify.plugin as p, pgbackup_verify.cli as cli\n"
              "p.reroot_without_target_values = lambda *a: None\n"
              f"cli.checks_dir = lambda: pathlib.Path({str(package / 'checks')!r})\n"
              f"sys.exit(cli.main(['--target', {str(target)!r}, '--co', '-p', 'no:cacheprovider', '-m', 'sql']))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"rootdir: {package}" in proc.stdout
    assert "<Function test_custom_sql_check[t-one]>" in proc.stdout
