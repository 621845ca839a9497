"""`pgbackup-verify --target FILE [pytest args]`: run the shipped checks with pytest.

Subcommands come from other installed distributions (entry points `pgbackup_verify.commands`):
a checkout's `demo/` adds `pgbackup-verify demo [--fault NAME]`, which builds the demo target
and checks it. The shipped package never imports the demo.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from pgbackup_verify import checks
from pgbackup_verify.errors import CONFIG_ERROR


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


def run_checks(args: list[str]) -> int:
    """Run the checks; exit codes are pytest's (0 ok, 1 failed, 4 config error, 5 none ran)."""
    # Checks picked by file or node id replace the default set; -k/-m narrow it as usual.
    explicit = [a for a in args if not a.startswith("-") and (a.endswith(".py") or "::" in a)]
    paths = [] if explicit else [str(checks_dir())]
    # The demo imports pytest-postgresql before pytest starts; that is harmless, so don't warn.
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning", "-rfE"]
    # The caller's own --rootdir or -c comes later on the command line, so it wins.
    return int(pytest.main([*root_and_ini(), *paths, *quiet, *args]))


def _subcommand(name: str) -> Callable[[list[str]], int] | None:
    """A subcommand another distribution registers (`pgbackup_verify.commands`), e.g. the repo's demo."""
    for ep in entry_points(group="pgbackup_verify.commands", name=name):
        return ep.load()
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _subcommand(argv[0]) if argv and not argv[0].startswith("-") else None
    if command is not None:
        return int(command(argv[1:]))
    if argv[:1] == ["demo"]:
        print("pgbackup-verify: the demo is not installed; it lives in a checkout's demo/ "
              "(pip install --no-deps -e ./demo, or run ./dev demo there)", file=sys.stderr)
        return CONFIG_ERROR
    if not argv or (argv[0] in ("-h", "--help") and len(argv) == 1):
        print(__doc__.strip())
        print("pytest options are passed through; see `pgbackup-verify --target FILE --help`.")
        return 0
    return run_checks(argv)


if __name__ == "__main__":
    sys.exit(main())
