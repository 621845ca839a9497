"""Run this suite's Python as the real unprivileged `nobody` user (the self-tests run as root).

The venv's interpreter may live where `nobody` cannot read it (a pyenv under /root), so the run uses
the first interpreter `nobody` can execute that has the venv's Python version, and adds the venv's
site-packages (editable installs included) with `site.addsitedir`. `probe()` says why it cannot
work here, for a skip reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

SITE = sysconfig.get_paths()["purelib"]
CANDIDATES = (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3")
BOOT = f"import site, sys; site.addsitedir({SITE!r}); "


def run_as_nobody(python: str, code: str, cwd: Path, *, timeout: float = 300,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "PY_COLORS": "0", "LANG": "C.UTF-8"}
    return subprocess.run([python, "-c", BOOT + code], user="nobody", group="nogroup", cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                          check=False)


def probe(cwd: Path) -> tuple[str | None, str]:
    """(interpreter, "") when one can import the suite as nobody, else (None, why not)."""
    if os.geteuid() != 0:
        return None, "needs root to act as the unprivileged user nobody"
    why = []
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in dict.fromkeys(CANDIDATES):
        if not Path(python).exists():
            continue
        try:
            res = run_as_nobody(python, "import pgbackup_verify.facts.dumps.inventory; "
                                "print('%d.%d' % sys.version_info[:2])", cwd, timeout=60)
        except OSError as e:  # the interpreter itself is out of nobody's reach
            why.append(f"{python}: {e.strerror}")
            continue
        if res.returncode == 0 and res.stdout.strip() == want:
            return python, ""
        why.append(f"{python}: {(res.stderr.strip().splitlines() or [res.stdout.strip()])[-1][:120]}")
    return None, "no Python " + want + " that nobody can run with this venv: " + "; ".join(why)
