"""`pgbackup-verify --target FILE [options]`: prove that a PostgreSQL host's backups restore, and tell
Uptime Kuma. Runs the shipped checks with pytest; every pytest option is accepted too.

Subcommands come from other installed distributions (entry points `pgbackup_verify.commands`):
a checkout's `demo/` adds `pgbackup-verify demo [--fault NAME]`, which builds the demo target
and checks it. The shipped package never imports the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Generator, Iterator
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import IO, Any

import pytest

from pgbackup_verify import checks
from pgbackup_verify.config.settings import INVENTORY_ENV, REPORTS_ENV, TARGET_ENV
from pgbackup_verify.errors import CONFIG_ERROR, EXIT_CODES, OK

PROG = "pgbackup-verify"
DESCRIPTION = ("Prove that a PostgreSQL host's backups can be restored, and tell Uptime Kuma: runs the shipped "
               "checks with pytest over one target file per host. Every pytest option is accepted too.")
COMMANDS = "pgbackup_verify.commands"
QUIET_HELP = "quiet, for cron: print nothing when every check passed, else the summary (exit code as always)"
# Read by libpq and the checks, not by an option: listed in --help next to the options' own variables.
OTHER_ENV = {
    "PGPASSWORD, PGPASSFILE (~/.pgpass)": "the database password; never in the target file (or "
                                          "[database].password_file)",
    "PGHOST, PGPORT, PGUSER, PGSSLMODE...": "libpq defaults for what [database].dsn leaves out",
    "[[kuma.push]].token_env": "each Kuma push monitor's token, in the variable that entry names",
}


def checks_dir() -> Path:
    return Path(checks.__file__).resolve().parent


def root_and_ini() -> list[str]:
    """pytest picks its rootdir and ini file from the positional arguments, before any plugin's
    options exist, so it would take the FILE of `--target FILE` for a test path and root the run
    wherever FILE lives. Name both: the checkout's pytest.ini when the checks come from a checkout,
    else no ini file at all (pytest reads a path that is not a regular file as "no configuration")."""
    root = checks_dir().parent
    ini = root / "pytest.ini"
    return [f"--rootdir={root}", f"--config-file={ini if ini.is_file() else os.devnull}"]


def own_version() -> str:
    try:
        return version(PROG)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def is_quiet(args: list[str]) -> bool:
    return any(a == "--quiet" or re.fullmatch(r"-q+", a) for a in args)


@contextlib.contextmanager
def _redirected(out: IO[bytes], err: IO[bytes]) -> Iterator[None]:
    """stdout and stderr of this process and its children (pg_dump, pytest-html...) go to `out` and `err`
    until the block ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _replay(held: IO[bytes], to: Any) -> None:
    held.seek(0)
    to.flush()
    shutil.copyfileobj(held, to.buffer, 1 << 16)
    to.flush()


class _ParseWitness:
    """pytest refuses an unknown option before any plugin of ours is configured; this one, handed to
    pytest.main, is registered before the command line is parsed, so latest.* says NOT CHECKED then too."""

    def __init__(self, args: list[str]) -> None:
        self.args = args

    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_parse(self) -> Generator[None, object, object]:
        try:
            return (yield)
        except pytest.UsageError as e:
            reports = reports_dir_of(self.args)
            lines = str(e).strip().splitlines()  # argparse's: "usage: ...", "...: error: <why>", ...
            why = next((ln.split("error: ", 1)[1] for ln in lines if "error: " in ln), lines[0] if lines else "")
            if reports is not None:
                from pgbackup_verify.report.files import publish_not_checked

                publish_not_checked(reports, f"usage error: {why}", CONFIG_ERROR)
            metrics = _option_of(self.args, "--metrics")
            if metrics:  # the textfile says so too; a Pushgateway is not told (the target files were not read)
                from pgbackup_verify.metrics.plugin import not_started

                not_started(Path(os.path.abspath(metrics)), f"usage error: {why}", CONFIG_ERROR, reports)
            raise


def _option_of(args: list[str], flag: str) -> str | None:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(flag)
    known, _ = parser.parse_known_args(args)
    return getattr(known, flag.lstrip("-").replace("-", "_"))


def reports_dir_of(args: list[str]) -> Path | None:
    """The reports directory the run would have used (settings.reports_path, from the raw arguments)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--reports-dir")
    parser.add_argument("--target", action="append")
    parser.add_argument("--inventory", action="append")
    known, _ = parser.parse_known_args(args)
    reports = known.reports_dir or os.environ.get(REPORTS_ENV)
    if not reports and not (known.target or known.inventory or os.environ.get(TARGET_ENV)
                            or os.environ.get(INVENTORY_ENV)):
        return None
    return Path(os.path.abspath(reports or "reports"))


def run_checks(args: list[str]) -> int:
    """Run the checks; the exit codes are errors.EXIT_CODES (pytest's 0-5, ours from 10)."""
    # Checks picked by file or node id replace the default set; -k/-m narrow it as usual.
    explicit = [a for a in args if not a.startswith("-") and (a.endswith(".py") or "::" in a)]
    paths = [] if explicit else [str(checks_dir())]
    # The demo imports pytest-postgresql before pytest starts; that is harmless, so don't warn.
    # No cache: it would be written next to the checks, i.e. into site-packages of an installed copy.
    # -rN: the plugin lists failed, errored and skipped checks by name, not by their path in site-packages.
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning", "-rN", "-p", "no:cacheprovider"]
    # The caller's own --rootdir or -c comes later on the command line, so it wins.
    argv = [*root_and_ini(), *paths, *quiet, *args]
    plugins = [_ParseWitness(args)]
    if not is_quiet(args):
        return int(pytest.main(argv, plugins=plugins))
    # Held in private temp files (on disk, not in memory); cron mails only what is not green.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with _redirected(out, err):
            code = int(pytest.main(argv, plugins=plugins))
        if code != OK:
            _replay(out, sys.stdout)
            _replay(err, sys.stderr)
    return code


def _subcommand(name: str) -> Callable[[list[str]], int] | None:
    """A subcommand another distribution registers (`pgbackup_verify.commands`), e.g. the repo's demo."""
    for ep in entry_points(group=COMMANDS, name=name):
        return ep.load()
    return None


class _OptionRecorder:
    """Stands in for pytest's parser to read the options our plugins register (their pytest_addoption)."""

    def __init__(self) -> None:
        self.options: list[tuple[str, str]] = []

    def getgroup(self, name: str, description: str = "") -> _OptionRecorder:
        return self

    def addoption(self, *flags: str, **attrs: Any) -> None:
        name = attrs.get("metavar") or re.split(r"[-_]", attrs.get("dest") or flags[-1])[-1].upper()
        metavar = "" if attrs.get("action") in ("store_true", "store_false") else f" {name}"
        self.options.append((", ".join(flags) + metavar, str(attrs.get("help", ""))))

    def addini(self, *args: Any, **kwargs: Any) -> None:
        pass


def _options() -> list[tuple[str, str]]:
    from pgbackup_verify import plugin
    from pgbackup_verify.kuma import plugin as kuma_plugin
    from pgbackup_verify.metrics import plugin as metrics_plugin

    rec = _OptionRecorder()
    for module in (plugin, kuma_plugin, metrics_plugin):
        module.pytest_addoption(rec)
    return [*rec.options, ("-q, --quiet", QUIET_HELP), ("--version", f"print {PROG}'s version"),
            ("--pytest-help", "pytest's own options; every one of them is accepted here too"),
            ("-h, --help", "this help")]


def _subcommands() -> list[tuple[str, str]]:
    out = []
    for ep in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        try:
            doc = sys.modules[ep.load().__module__].__doc__ or ""
        except Exception as e:  # a broken extra distribution must not break --help
            doc = f"(cannot be loaded: {type(e).__name__})"
        out.append((ep.name, doc.strip().splitlines()[0] if doc.strip() else ""))
    return out


def _rows(rows: list[tuple[str, str]], width: int = 30) -> list[str]:
    out = []
    for k, v in rows:
        text = textwrap.wrap(v, 100 - width - 3) or [""]
        out.append(f"  {k:<{width}} {text[0]}" if len(k) < width else f"  {k}\n  {'':<{width}} {text[0]}")
        out += [f"  {'':<{width}} {t}" for t in text[1:]]
    return out


def help_text() -> str:
    """Options, environment variables, subcommands and exit codes (errors.EXIT_CODES, the one table)."""
    options = _options()
    env = [(m.group(1), f"instead of {flags.split(',')[0].split()[0]}") for flags, text in options
           if (m := re.search(r"Env: (\w+)", text))]
    lines = [f"usage: {PROG} --target FILE|DIR [options] [pytest options]",
             f"       {PROG} --inventory ANSIBLE_INVENTORY [options] [pytest options]",
             f"       {PROG} COMMAND [args]", "", *textwrap.wrap(DESCRIPTION, 100), "", "options:",
             *_rows(options), "", "environment variables:", *_rows([*env, *OTHER_ENV.items()]), "", "commands:",
             *(_rows(_subcommands()) or ["  (none installed)"]), "", "exit codes:",
             *(f"  {code:>3}  {text}" for code, text in sorted(EXIT_CODES.items())), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _subcommand(argv[0]) if argv and not argv[0].startswith("-") else None
    if command is not None:
        return int(command(argv[1:]))
    if argv[:1] == ["demo"]:
        print(f"{PROG}: the demo is not installed; it lives in a checkout's demo/ "
              "(pip install --no-deps -e ./demo, or run ./dev demo there)", file=sys.stderr)
        return CONFIG_ERROR
    named = os.environ.get(TARGET_ENV) or os.environ.get(INVENTORY_ENV)
    if (not argv and not named) or argv in (["-h"], ["--help"]):
        print(help_text())
        return OK
    if argv == ["--version"]:
        print(f"{PROG} {own_version()} (pytest {pytest.__version__}, Python {sys.version.split()[0]})")
        return OK
    if argv == ["--pytest-help"]:
        return run_checks(["--help"])
    return run_checks(argv)


if __name__ == "__main__":
    sys.exit(main())
