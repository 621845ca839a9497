"""The core sections of a target file: what is verified (database, dumps, SQL checks, trends, drill).

Each section is a frozen dataclass whose fields are its documented keys; `validate()` checks the
values the types alone cannot, with one-line ConfigError messages naming `[section].key`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg.conninfo

from pgbackup_verify.config import trust
from pgbackup_verify.config.concerns import CONCERNS
from pgbackup_verify.errors import ConfigError


def key(help_text: str, *, path: str | None = None, default: Any = dataclasses.MISSING,
        gt: float | None = None, ge: float | None = None, lt: float | None = None, glob: str | None = None) -> Any:
    """A documented key; `path` is 'file' or 'dir' when the value must be a readable path.

    A number's range is `gt`/`ge` (lower bound; without one, >= 0) and `lt` (upper bound); the
    loader refuses NaN and infinity for every number. `glob` is 'name' (matched against file
    names, so no '/') or 'path' when the value is a glob the loader must check.
    """
    meta = {"help": help_text, "path": path, "gt": gt, "ge": ge, "lt": lt, "glob": glob}
    if isinstance(default, list | tuple):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """Base of every section: the loader calls validate() once the whole file has been built."""

    def validate(self) -> None:
        """Raise ConfigError on a value its type allows but the checks cannot use."""


def concern_problem(name: str, registry: Collection[str]) -> str | None:
    """Why `name` is not a concern of `registry` (a typo of one is named), or None."""
    if name in registry:
        return None
    close = difflib.get_close_matches(name, list(registry), n=1, cutoff=0.75)
    hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(registry)}"
    return f"'{name}' is not a concern; {hint}"


def conninfo(dsn: str, where: str) -> dict[str, Any]:
    """The parsed libpq string, or a ConfigError naming `where`."""
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"{where}: not a valid libpq connection string ({e})") from None


# testinfra backends a backup host may be reached by ("local" is this machine).
HOST_BACKENDS = ("local", "ssh", "safe-ssh", "paramiko", "ansible", "docker", "podman", "kubectl", "openshift",
                 "lxc", "salt", "winrm", "chroot")


def host_scheme(spec: str) -> str:
    """testinfra's backend name of a host spec (`ssh://x` -> ssh; a bare name means paramiko, as in testinfra)."""
    if "://" not in spec:
        return "paramiko" if spec else "local"
    return spec.split("://", 1)[0]


def is_remote(spec: str) -> bool:
    """Whether the target's files (dumps, crontabs, scripts) live on another machine than the checks run on."""
    return host_scheme(spec) != "local"


@dataclass(frozen=True)
class TargetSection(Section):
    name: str = key("label of this target in reports and Kuma messages (default: file name)", default="")
    host: str = key("testinfra host spec of the backup host", default="local://")

    def validate(self) -> None:
        if host_scheme(self.host) not in HOST_BACKENDS:
            raise ConfigError(f"[target].host: '{host_scheme(self.host)}://' is not a testinfra backend; use "
                              "local://, ssh://user@host, paramiko://user@host or ansible://name")
        netloc = self.host.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
        if ":" in netloc.rpartition("@")[0]:  # testinfra's user:password@host (sshpass puts it on a command line)
            raise ConfigError("[target].host: contains a password; remove it and log in with a key "
                              "(ssh_identity_file in the spec, or IdentityFile in its ssh_config)")


@dataclass(frozen=True)
class DatabaseSection(Section):
    dsn: str = key("libpq connection string of the live database, WITHOUT password")
    dump_role: str = key("role that pg_dump runs as; its privileges are audited")
    password_file: Path | None = key("file holding the password (else PGPASSWORD / ~/.pgpass)",
                                     path="file", default=None)
    exclude_schemas: tuple[str, ...] = key("schemas deliberately left out of the dump", default=())
    connect_timeout: int = key("seconds to wait for the database", default=10, gt=0)
    dump_options: tuple[str, ...] = key("options of the nightly pg_dump that change what it reads (-B/--no-blobs, "
                                        "-b, -n, -t, -s, --enable-row-security; others are ignored)", default=())
    strict_grants: bool = key("also fail on privileges pg_dump does not need (SELECT on views, materialized "
                              "views, foreign tables; USAGE on sequences and on schemas it reads nothing from)",
                              default=False)

    def validate(self) -> None:
        if "password" in conninfo(self.dsn, "[database].dsn"):
            raise ConfigError("[database].dsn: contains a password; remove it and use PGPASSWORD, "
                              "~/.pgpass or [database].password_file")
        if self.password_file:
            trust.check_path(self.password_file, "[database].password_file", secret=True)
        for option in self.dump_options:
            if not option.startswith("-"):
                raise ConfigError(f"[database].dump_options: {option!r} is not an option; write an option's "
                                  "value attached to it, e.g. \"--schema=app\" or \"-napp\"")


@dataclass(frozen=True)
class BackupsSection(Section):
    directory: Path = key("directory the nightly dumps are written to", path="dir")
    pattern: str = key("glob of dump files in that directory", default="*.sql.gz", glob="name")
    max_age_hours: float = key("newest dump must be younger than this", default=26.0, gt=0)
    min_payload_bytes: int = key("decompressed size the newest dump must reach", default=1024, gt=0)
    max_shrink_ratio: float = key("allowed payload shrink against the previous good dump (0.2 = 20%)",
                                  default=0.2, ge=0, lt=1)
    retention_days: int = key("window in which every night must have a good dump", default=7, gt=0)
    min_good_dumps: int = key("good dumps that must be kept (nights expected)", default=7, ge=1)
    rescan_days: int = key("each kept dump is read again in full at least every this many days (the newest every "
                           "run; between, the scan record of an unchanged file stands)", default=7, ge=1)
    stray_max_bytes: int = key("a dump file smaller than this is a stray partial artifact", default=1024)
    expected_schemas: tuple[str, ...] = key("schemas a custom-format dump's TOC must list", default=())
    night_boundary: str = key("local time of day \"HH:MM\" at which one night ends and the next begins; "
                              "\"auto\": the middle of the longest quiet stretch between the dumps' times",
                              default="auto")
    read_timeout_seconds: float = key("wall-clock limit of one dump file's full read (decompression included)",
                                      default=3600.0, gt=0)

    def validate(self) -> None:
        from pgbackup_verify.facts.dumps.nights import parse_boundary  # here: facts import config
        try:
            parse_boundary(self.night_boundary)
        except ValueError as e:
            raise ConfigError(f"[backups].night_boundary: {e}") from None


SQL_EXPECT = ("no_rows", "true")


@dataclass(frozen=True)
class SqlCheck(Section):
    name: str = key("name of the check as shown in reports and Kuma messages")
    query: str = key("SQL run in the read-only audit transaction")
    expect: str = key("'no_rows' (every returned row is a finding) or 'true' (one boolean)")
    fix: str = key("one line telling the operator what to do when it fails")
    concern: str = key("marker it is routed under (grants, dumps, ...; default: sql)", default="sql")
    timeout_s: float = key("statement timeout in seconds", default=30.0, gt=0)

    def validate(self) -> None:
        if self.expect not in SQL_EXPECT:
            raise ConfigError(f"[[sql_check]] '{self.name}'.expect: '{self.expect}' is not one of "
                              f"{', '.join(SQL_EXPECT)}")
        if not self.concern.isidentifier():
            # Any other name may be a site's own concern (a hook adds it): the run checks it against
            # its registry (config.settings.load_targets), typos included.
            raise ConfigError(f"[[sql_check]] '{self.name}'.concern: {concern_problem(self.concern, CONCERNS)}")

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
    restore_budget_seconds: float = key("the restore drill must finish within this many seconds", default=3600.0,
                                         gt=0)
    payload_window: int = key("earlier runs whose median payload is the trend", default=7, ge=1)
    payload_factor: float = key("the payload may be at most this factor above or below the trend", default=1.5,
                                 gt=1)
    min_history: int = key("earlier runs with a payload needed before the trend is judged", default=3, ge=1)

    def validate(self) -> None:
        if self.min_history > self.payload_window:
            raise ConfigError(f"[trends].min_history: {self.min_history} is more than payload_window "
                              f"{self.payload_window}; lower it or widen the window")


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")  # date.weekday() order


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
    database: str = key("a pg_dumpall cluster dump: the database of the dump the expected schemas, tables and "
                        "objects apply to (default: the database of [database].dsn); every database of the dump "
                        "is restored and its rows compared", default="")
    globals_glob: str | None = key("throwaway mode: glob of `pg_dumpall --globals-only` files in "
                                   "[backups].directory; the newest one's roles are made (plain NOLOGIN owner roles, "
                                   "its memberships among them) before the dump restores, so its owners and grants "
                                   "exist", default=None, glob="name")
    jobs: int = key("connections of the restore: pg_restore -j for custom-format dumps, the parallel "
                    "plain restore (data, keys, indexes) for SQL dumps; 1 = one serial psql", default=2, ge=1)
    time_limit_seconds: int = key("the drill is stopped and fails after this long", default=3600, ge=1)
    disk_factor: float = key("free disk needed = payload x this factor (throwaway mode)", default=2.0, ge=1)
    stale_minutes: float = key("a leftover drill database/cluster of a live process older than this is "
                               "removed too", default=240.0, gt=0)
    source: str = key("dump the drill restores: local (newest file of [backups]) or offsite (the PG member "
                      "of the newest [offsite] archive, streamed through rclone)", default="local")
    tier: str = key("what the drill restores: full (everything), schema (pre- and post-data, no table data) "
                    "or sample (schema plus the data of sample_tables tables)", default="full")
    sample_tables: int = key("tier sample: tables whose data is restored (plus the tables their foreign keys "
                             "reference)", default=5, ge=1)
    sample_pick: str = key("tier sample: which tables: largest (by size in the live database) or rotate "
                           "(a different set each day, all tables in turn)", default="largest")
    full_on: str | tuple[str, ...] = key("weekday(s) on which the drill is full whatever tier says, e.g. "
                                         "\"sunday\" or [\"wednesday\", \"sunday\"]", default=())
    max_full_age_days: int = key("a check fails when the last passing full drill (run history) is older "
                                 "than this many days", default=8, ge=1)
    sandbox: str = key("throwaway mode: bwrap (the server and psql run in a bubblewrap sandbox as an unnamed "
                       "uid, no network) or none (no namespaces; every report says the drill ran unsandboxed)",
                       default="bwrap")
    allow_superuser_restore: bool = key("scratch mode: restore even when server_dsn's role is a superuser or may "
                                        "run server programs or files (every report then flags it)", default=False)

    def validate(self) -> None:
        if self.source not in ("local", "offsite"):
            raise ConfigError(f"[drill].source: '{self.source}' is not one of local, offsite")
        if self.sandbox not in ("bwrap", "none"):
            raise ConfigError(f"[drill].sandbox: '{self.sandbox}' is not one of bwrap, none")
        if self.tier not in ("full", "schema", "sample"):
            raise ConfigError(f"[drill].tier: '{self.tier}' is not one of full, schema, sample")
        if self.sample_pick not in ("largest", "rotate"):
            raise ConfigError(f"[drill].sample_pick: '{self.sample_pick}' is not one of largest, rotate")
        for day in (self.full_on,) if isinstance(self.full_on, str) else self.full_on:
            if day.lower() not in WEEKDAYS:
                raise ConfigError(f"[drill].full_on: '{day}' is not a weekday; use {', '.join(WEEKDAYS)}")
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
