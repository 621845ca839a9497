"""`--env-file FILE`: the run's secrets (PGPASSWORD, Kuma push tokens) read as data, never run as code.

`set -a; . FILE` makes a root shell execute whatever FILE holds; this reads the same `KEY="value"`
lines (as sh and systemd's EnvironmentFile= read them: `#` comments, an optional `export`, single or
double quotes) into the run's environment, after judging the file like sshd does (config.trust):
owned by root or this user, writable by no one else, readable by no other user. A line that is not
`KEY=value` is refused naming its number, never its text (it may hold a secret).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pgbackup_verify.config import trust
from pgbackup_verify.errors import ConfigError

_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")


def read(path: Path) -> dict[str, str]:
    """The variables `path` sets; ConfigError (one line) if it cannot be trusted or parsed."""
    what = "--env-file"
    out = {}
    for n, raw in enumerate(trust.read_trusted(path, what, secret=True).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.fullmatch(line)
        try:
            words = shlex.split(m[2], comments=True) if m else None
        except ValueError:  # an unclosed quote
            words = None
        if m is None or words is None or len(words) > 1:
            raise ConfigError(f"{what} '{path}' line {n}: not KEY=value (quote a value with spaces: "
                              'KEY="a b"); fix that line')
        out[m[1]] = words[0] if words else ""
    return out
