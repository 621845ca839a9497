"""The core sections of a target file: what is verified (database, dumps, SQL checks, trends, drill).

Each section is a frozen dataclass whose fields are its documented keys; `validate()` checks the
values the types alone cannot, with one-line ConfigError messages naming `[section].key`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg.conninfo

from pgbackup_verify.errors import ConfigError


def key(help_text: str, *, path: str | None = None, default: Any = dataclasses.MISSING) -> Any:
    """A documented key; `path` is 'file' or 'dir' when the value must be a readable path."""
    meta = {"help": help_text, "path": path}
    if isinstance(default, list | tuple):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """Base of every section: the loader calls validate() once the whole file has been built."""

    def validate(self) -> None:
        """Raise ConfigError on a value its type allows but the checks cannot use."""


def conninfo(dsn: str, where: str) -> dict[str, Any]:
    """The parsed libpq string, or a ConfigError naming `where`."""
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"{where}: not a valid libpq connection string ({e})") from None


@dataclass(frozen=True)
class TargetSection(Section):
    name: str = key("label of this target in reports and Kuma messages (default: file name)", default="")
    host: str = key("testinfra host spec of the backup host", default="local://")


@dataclass(frozen=True)
class DatabaseSection(Section):
    dsn: str = key("libpq connection string of the live database, WITHOUT password")
    dump_role: str = key("role that pg_dump runs as; its privileges are audited")
    password_file: Path | None = key("file holding the password (else PGPASSWORD / ~/.pgpass)",
                                     path="file", default=None)
    exclude_schemas: tuple[str, ...] = key("schemas deliberately left out of the dump", default=())
    connect_timeout: int = key("seconds to wait for the database", default=10)

    def validate(self) -> None:
        if "password" in conninfo(self.dsn, "[database].dsn"):
            raise ConfigError("[database].dsn: contains a password; remove it and use PGPASSWORD, "
                              "~/.pgpass or [database].password_file")


@dataclass(frozen=True)
class BackupsSection(Section):
    directory: Path = key("directory the nightly dumps are written to", path="dir")
    pattern: str = key("glob of dump files in that directory", default="*.sql.gz")
    max_age_hours: float = key("newest dump must be younger than this", default=26.0)
    min_payload_bytes: int = key("decompressed size the newest dump must reach", default=1024)
    max_shrink_ratio: float = key("allowed payload shrink against the previous good dump (0.2 = 20%)",
                                  default=0.2)
    retention_days: int = key("window in which every night must have a good dump", default=7)
    min_good_dumps: int = key("good dumps that must be kept (nights expected)", default=7)
    stray_max_bytes: int = key("a dump file smaller than this is a stray partial artifact", default=1024)
    expected_schemas: tuple[str, ...] = key("schemas a custom-format dump's TOC must list", default=())

    def validate(self) -> None:
        if not 0 <= self.max_shrink_ratio < 1:
            raise ConfigError(f"[backups].max_shrink_ratio: {self.max_shrink_ratio} is not in [0, 1); "
                              "use e.g. 0.2 for 20%")
        for name in ("max_age_hours", "retention_days", "min_payload_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[backups].{name}: must be greater than 0")


SQL_EXPECT = ("no_rows", "true")


@dataclass(frozen=True)
class SqlCheck(Section):
    name: str = key("name of the check as shown in reports and Kuma messages")
    query: str = key("SQL run in the read-only audit transaction")
    expect: str = key("'no_rows' (every returned row is a finding) or 'true' (one boolean)")
    fix: str = key("one line telling the operator what to do when it fails")
    concern: str = key("marker it is routed under (grants, dumps, ...; default: sql)", default="sql")
    timeout_s: float = key("statement timeout in seconds", default=30.0)

    def validate(self) -> None:
        if self.expect not in SQL_EXPECT:
            raise ConfigError(f"[[sql_check]] '{self.name}'.expect: '{self.expect}' is not one of "
                              f"{', '.join(SQL_EXPECT)}")

    @staticmethod
    def validate_all(checks: tuple[SqlCheck, ...]) -> None:
        """Each entry, then that no two share a name (results and Kuma messages are keyed by it)."""
        names = [c.name for c in checks]
        for i, c in enumerate(checks):
            c.validate()
            if names.count(c.name) > 1:
                raise ConfigError(f"[[sql_check]] #{i + 1}.name: '{c.name}' is used twice; "
                                  "give each check its own name")


@dataclass(frozen=True)
class TrendsSection(Section):
    restore_budget_seconds: float = key("the restore drill must finish within this many seconds", default=3600.0)
    payload_window: int = key("earlier runs whose median payload is the trend", default=7)
    payload_factor: float = key("the payload may be at most this factor above or below the trend", default=1.5)
    min_history: int = key("earlier runs with a payload needed before the trend is judged", default=3)

    def validate(self) -> None:
        if self.restore_budget_seconds <= 0:
            raise ConfigError("[trends].restore_budget_seconds: must be greater than 0, e.g. 3600 for one hour")
        if self.payload_factor <= 1:
            raise ConfigError(f"[trends].payload_factor: {self.payload_factor} must be greater than 1; "
                              "use e.g. 1.5 to allow +50% / -33% against the trend")
        for name in ("payload_window", "min_history"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[trends].{name}: must be at least 1")
        if self.min_history > self.payload_window:
            raise ConfigError(f"[trends].min_history: {self.min_history} is more than payload_window "
                              f"{self.payload_window}; lower it or widen the window")


@dataclass(frozen=True)
class DrillSection(Section):
    mode: str = key("where the drill restores: throwaway (local cluster), scratch (database on "
                    "server_dsn) or off", default="throwaway")
    server_dsn: str = key("scratch mode: libpq string of a server where the drill may create databases "
                          "(role with CREATEDB), WITHOUT password", default="")
    prefix: str = key("name prefix of every drill database; nothing without it is ever created or dropped",
                      default="restore_drill_")
    work_dir: Path | None = key("directory for throwaway clusters and spool files (default: system temp)",
                                path="dir", default=None)
    lock_file: Path | None = key("file locked (flock) while a drill runs (default: drill.lock in a "
                                 "private 0700 directory: /run/pgbackup-verify as root)", default=None)
    expected_schemas: tuple[str, ...] = key("schemas the restore must hold (default: "
                                            "[backups].expected_schemas)", default=())
    min_tables: tuple[tuple[str, int], ...] = key("table: schema -> minimum tables after restore "
                                                  "(default 1 per expected schema)", default=())
    min_sequences: int = key("minimum sequences after restore", default=0)
    min_views: int = key("minimum views after restore", default=0)
    min_functions: int = key("minimum functions after restore", default=0)
    expect_live_catalog: bool = key("also expect every live schema, table, sequence, view and function "
                                    "(minus [database].exclude_schemas)", default=False)
    roles: tuple[str, ...] = key("throwaway mode: roles created before restoring a dump made without "
                                 "--no-owner", default=())
    jobs: int = key("connections of the restore: pg_restore -j for custom-format dumps, the parallel "
                    "plain restore (data, keys, indexes) for SQL dumps; 1 = one serial psql", default=2)
    time_limit_seconds: int = key("the drill is stopped and fails after this long", default=3600)
    disk_factor: float = key("free disk needed = payload x this factor (throwaway mode)", default=2.0)
    stale_minutes: float = key("a leftover drill database/cluster of a live process older than this is "
                               "removed too", default=240.0)
    source: str = key("dump the drill restores: local (newest file of [backups]) or offsite (the PG member "
                      "of the newest [offsite] archive, streamed through rclone)", default="local")

    def validate(self) -> None:
        if self.source not in ("local", "offsite"):
            raise ConfigError(f"[drill].source: '{self.source}' is not one of local, offsite")
        if self.mode not in ("throwaway", "scratch", "off"):
            raise ConfigError(f"[drill].mode: '{self.mode}' is not one of throwaway, scratch, off")
        if self.mode == "scratch" and not self.server_dsn:
            raise ConfigError("[drill].server_dsn: required when mode = 'scratch'; give the server the drill "
                              "may create restore_drill_* databases on")
        if self.server_dsn and "password" in conninfo(self.server_dsn, "[drill].server_dsn"):
            raise ConfigError("[drill].server_dsn: contains a password; remove it and use PGPASSWORD or ~/.pgpass")
        if not re.fullmatch(r"[a-z][a-z0-9_]{5,30}_", self.prefix):
            raise ConfigError(f"[drill].prefix: '{self.prefix}' must be 6-31 lowercase letters/digits/_ ending "
                              "in '_' (e.g. restore_drill_)")
        for name in ("jobs", "time_limit_seconds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[drill].{name}: must be at least 1")
        if self.disk_factor < 1:
            raise ConfigError(f"[drill].disk_factor: {self.disk_factor} is below 1; the restore needs at least "
                              "the payload")
