"""A small crontab reader: entries, a 5-field schedule validator and the scripts an entry runs.

Only what the host checks need: which line schedules which script, whether cron would accept the
schedule, and which absolute paths a command executes (redirect targets are not executed).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# (name, low, high, names) per field; day-of-week 7 is Sunday too, as in Vixie cron.
FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
NICKNAMES = {"@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")
_REDIRECT = re.compile(r"^\d*(>>?|<)&?$")
_SEPARATORS = {";", "&&", "||", "|", "&"}
WRAPPERS = {"sh", "bash", "dash", "zsh", "ksh", "python", "python3", "perl", "nice", "ionice", "timeout",
            "chronic", "flock", "env", "nohup", "setsid", "run-one", "sudo", "time"}


@dataclass(frozen=True)
class CronEntry:
    source: str  # where the line came from, e.g. "crontab -l -u root" or "/etc/cron.d/pg"
    lineno: int
    schedule: str
    command: str
    user: str = ""  # only in system crontabs (/etc/crontab, /etc/cron.d)
    error: str = ""  # why cron would reject the schedule; "" when it parses

    @property
    def where(self) -> str:
        return f"{self.source}:{self.lineno}"

    def scripts(self) -> list[str]:
        return executed_paths(self.command)


@dataclass(frozen=True)
class Crontab:
    source: str
    entries: list[CronEntry] = field(default_factory=list)
    error: str = ""  # the crontab could not be read at all


def _field_error(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> str:
    def value(v: str) -> int:
        if v.lower() in names:
            return names.index(v.lower()) + (1 if name == "month" else 0)
        if not v.isdigit():
            raise ValueError(f"{name} '{v}' is not a number")
        n = int(v)
        if not low <= n <= high:
            raise ValueError(f"{name} {n} is outside {low}-{high}")
        return n

    try:
        for part in text.split(","):
            rng, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"{name} step '{step}' is not a positive number")
            if rng == "*":
                continue
            a, dash, b = rng.partition("-")
            first = value(a)
            if dash and value(b) < first:
                raise ValueError(f"{name} range '{rng}' runs backwards")
            if step and not dash:
                raise ValueError(f"{name} '{part}': a step needs '*' or a range")
    except ValueError as e:
        return str(e)
    return ""


def schedule_error(schedule: str) -> str:
    """Why cron would reject a schedule ('' when it is valid): 5 fields or an @nickname."""
    fields = schedule.split()
    if len(fields) == 1 and fields[0].startswith("@"):
        return "" if fields[0].lower() in NICKNAMES else f"unknown nickname '{fields[0]}'"
    if len(fields) != 5:
        return f"expected 5 schedule fields, got {len(fields)}"
    for text, spec in zip(fields, FIELDS, strict=True):
        err = _field_error(text, *spec)
        if err:
            return err
    return ""


def parse(text: str, source: str, system: bool = False) -> Crontab:
    """Active entries of a crontab; `system` crontabs (/etc/cron.d) carry a user column."""
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or _ENV_LINE.match(line):
            continue
        words = line.split()
        n = 1 if words[0].startswith("@") else 5
        need = n + (2 if system else 1)
        if len(words) < need:
            entries.append(CronEntry(source, lineno, line, "", error=f"incomplete line '{line}'"))
            continue
        schedule = " ".join(words[:n])
        user = words[n] if system else ""
        # Keep the command's own spacing: cut the schedule (and user) words off the raw line.
        rest = line
        for w in words[: n + (1 if system else 0)]:
            rest = rest[rest.index(w) + len(w):]
        entries.append(CronEntry(source, lineno, schedule, rest.strip(), user, schedule_error(schedule)))
    return Crontab(source, entries)


def _words(command: str) -> list[str]:
    # `%` ends the command in crontab syntax (the rest is stdin), so it is cut off first.
    command = re.split(r"(?<!\\)%", command, maxsplit=1)[0]
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:
        return command.split()


def _segments(command: str) -> list[list[str]]:
    """The simple commands of a command line, redirections and their targets removed."""
    segments: list[list[str]] = [[]]
    skip_next = False
    for w in _words(command):
        if skip_next:
            skip_next = False
        elif _REDIRECT.match(w) or w in {">", ">>", "<", "&>"}:
            skip_next = True
        elif w in _SEPARATORS:
            segments.append([])
        elif not w.startswith(">"):
            segments[-1].append(w)
    return [s for s in segments if s]


def executed_paths(command: str) -> list[str]:
    """Absolute paths a cron command executes: a command word, or a script handed to a wrapper
    (`bash /x.sh`, `flock -n LOCK /x.sh`); flock's lock file is not a script."""
    paths = []
    for words in _segments(command):
        while words and _ENV_LINE.match(words[0]):
            words = words[1:]
        if not words:
            continue
        if words[0].startswith("/"):
            paths.append(words[0])
        wrapper = words[0].rsplit("/", 1)[-1]
        if wrapper in WRAPPERS:
            args = [w for w in words[1:] if not w.startswith("-")]
            if wrapper == "flock":
                args = args[1:]  # flock's first operand is its lock file, not a script
            paths += [w for w in args if w.startswith("/") and not w.startswith("/dev/")]
    return paths


def mentioned_paths(command: str) -> list[str]:
    """Every absolute path word of a command except redirect targets (for the retired check)."""
    return [w.split("=", 1)[-1] for s in _segments(command) for w in s if w.split("=", 1)[-1].startswith("/")]
