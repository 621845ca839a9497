"""Text for a terminal or a cron mail: no control character from a name or a message reaches them.

Table, schema and role names come from the database, heartbeat messages and notification names
from Kuma, error texts from servers: anyone who can name a table can put `ESC [2J` (clear the
screen), a CR (overwrite the line before it) or an OSC sequence (retitle the terminal, or worse on
some terminals) into a finding. `printable` shows each such character as a visible escape
(`\\x1b`), so the name is still recognisable and nothing reaches the terminal as a command.
TAB and newline stay: findings are multi-line by design.
"""

from __future__ import annotations

import re

from pgbackup_verify.facts.redact import CONTROL_CHARS


def _escape(m: re.Match[str]) -> str:
    code = ord(m[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every terminal control character (but TAB and newline) shown as an escape."""
    return CONTROL_CHARS.sub(_escape, text)
