"""A crontab reader: entries, a 5-field schedule validator, and what each entry really runs.

Which line schedules which script, whether cron would accept the schedule, whether cron cuts the
command at an unescaped `%`, and which programs the command finally runs (read by `cronline`, the
way the shell reads it: wrappers, `cd`, redirections). Whether cron reads a file at all (its name,
mode and owner) is the host's knowledge: `Crontab.ignored`, set by `facts.host`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from pgbackup_verify.facts import cronline

# (name, low, high, names) per field; day-of-week 7 is Sunday too, as in Vixie cron.
FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
NICKNAMES = {"@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_ENV_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


@dataclass(frozen=True)
class CronEntry:
    source: str  # where the line came from, e.g. "crontab -l -u root" or "/etc/cron.d/pg"
    lineno: int
    schedule: str
    command: str  # as written in the crontab (before cron's % handling)
    user: str = ""  # the user column of system crontabs (/etc/crontab, /etc/cron.d), else the crontab's owner
    error: str = ""  # why cron would reject the schedule; "" when it parses
    home: str = ""  # cron's working directory for the job: HOME set in the crontab, else the user's home
    system: bool = False  # from a crontab with a user column

    @property
    def where(self) -> str:
        return f"{self.source}:{self.lineno}"

    @property
    def percent(self) -> cronline.Percent:
        """The command cut at its first unescaped % (what cron hands to the shell)."""
        return cronline.cron_percent(self.command)

    def parsed(self) -> cronline.Parsed:
        return cronline.parse_command(self.percent.command, self.home or None, "")

    def runs(self) -> list[cronline.Run]:
        """What the line finally runs, wrappers peeled off; a run's user "" is the entry's user."""
        return [r if r.user else dataclasses.replace(r, user=self.user) for r in self.parsed().runs]

    def guarded(self) -> set[str]:
        """Paths the line runs only behind a test of their own file (`[ -x P ] && P`, `if [ -x P ]; then
        P; fi`, `command -v P >/dev/null && P`): while such a file is absent, the line does nothing."""
        runs = [r for r in self.runs() if r.is_path]
        return {r.path for r in runs if r.guarded} - {r.path for r in runs if not r.guarded}

    def scripts(self) -> list[str]:
        """Paths the line runs (commands named by a path, and scripts handed to an interpreter)."""
        return list(dict.fromkeys(r.path for r in self.runs() if r.is_path))

    def scripts_as_written(self) -> list[str]:
        """The same, with every % read as a literal (what the administrator meant to run)."""
        escaped = cronline.cron_percent(self.percent.escaped).command
        return list(dict.fromkeys(r.path for r in cronline.parse_command(escaped, self.home or None).runs
                                  if r.is_path))

    def line(self, command: str | None = None) -> str:
        """The crontab line, with `command` in place of its own (to show a corrected line)."""
        return " ".join((self.schedule, *([self.user] if self.system else []),
                         self.command if command is None else command))


@dataclass(frozen=True)
class Crontab:
    source: str
    entries: list[CronEntry] = field(default_factory=list)
    error: str = ""  # the crontab could not be read at all
    user: str = "root"  # whose crontab (system crontabs name the user per line)
    ignored: str = ""  # why cron will not run this file at all ("" when it does)


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


def parse(text: str, source: str, system: bool = False, user: str = "root") -> Crontab:
    """Active entries of a crontab; `system` crontabs (/etc/crontab, /etc/cron.d) carry a user column.
    HOME set in the crontab is the working directory of the entries after it (as cron does)."""
    entries = []
    home = ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        env = _ENV_LINE.match(line)
        if env:
            if env.group(1) == "HOME":
                home = env.group(2).strip().strip("'\"")
            continue
        words = line.split()
        n = 1 if words[0].startswith("@") else 5
        need = n + (2 if system else 1)
        if len(words) < need:
            entries.append(CronEntry(source, lineno, line, "", error=f"incomplete line '{line}'"))
            continue
        schedule = " ".join(words[:n])
        entry_user = words[n] if system else user
        # Keep the command's own spacing: cut the schedule (and user) words off the raw line.
        rest = line
        for w in words[: n + (1 if system else 0)]:
            rest = rest[rest.index(w) + len(w):]
        entries.append(CronEntry(source, lineno, schedule, rest.strip(), entry_user, schedule_error(schedule), home,
                                 system))
    return Crontab(source, entries, user=user)


def mentioned_paths(command: str) -> list[str]:
    """Every absolute path word of a command, nested `sh -c` strings included, redirect targets
    excepted (for the retired-script check: `cp /x.retired /y` runs it no less for being an argument)."""
    words = cronline.parse_command(cronline.cron_percent(command).command).words
    paths = (w.split("=", 1)[-1] for w in words)
    return list(dict.fromkeys(p for p in paths if p.startswith("/") and not any(c.isspace() for c in p)))
