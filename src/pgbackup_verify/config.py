"""The target file: one TOML file per host, validated once into frozen dataclasses.

Every error is one line that names the file, the key and what to do, so that a typo
in a nightly cron job reads like a to-do item, not like a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg.conninfo

from pgbackup_verify.errors import CONFIG_ERROR, UserError

EXAMPLE = "target.example.toml"


class ConfigError(UserError):
    """A user mistake in the target file or the options; str() is the one line to show."""

    exit_code = CONFIG_ERROR


def _key(help_text: str, *, path: str | None = None, default: Any = dataclasses.MISSING) -> Any:
    """A documented key; `path` is 'file' or 'dir' when the value must be a readable path."""
    meta = {"help": help_text, "path": path}
    if isinstance(default, list | tuple):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TargetSection:
    name: str = _key("label of this target in reports and Kuma messages (default: file name)", default="")
    host: str = _key("testinfra host spec of the backup host", default="local://")


@dataclass(frozen=True)
class DatabaseSection:
    dsn: str = _key("libpq connection string of the live database, WITHOUT password")
    dump_role: str = _key("role that pg_dump runs as; its privileges are audited")
    password_file: Path | None = _key("file holding the password (else PGPASSWORD / ~/.pgpass)",
                                      path="file", default=None)
    exclude_schemas: tuple[str, ...] = _key("schemas deliberately left out of the dump", default=())
    connect_timeout: int = _key("seconds to wait for the database", default=10)


@dataclass(frozen=True)
class BackupsSection:
    directory: Path = _key("directory the nightly dumps are written to", path="dir")
    pattern: str = _key("glob of dump files in that directory", default="*.sql.gz")
    max_age_hours: float = _key("newest dump must be younger than this", default=26.0)
    min_payload_bytes: int = _key("decompressed size the newest dump must reach", default=1024)
    max_shrink_ratio: float = _key("allowed payload shrink against the previous good dump (0.2 = 20%)",
                                   default=0.2)
    retention_days: int = _key("window in which every night must have a good dump", default=7)
    min_good_dumps: int = _key("good dumps that must be kept (nights expected)", default=7)
    stray_max_bytes: int = _key("a dump file smaller than this is a stray partial artifact", default=1024)
    expected_schemas: tuple[str, ...] = _key("schemas a custom-format dump's TOC must list", default=())


SHELLCHECK_SEVERITIES = ("error", "warning", "info", "style", "off")


@dataclass(frozen=True)
class HostSection:
    # Paths here live on the backup host (maybe remote), so they are strings, not checked locally.
    cron_jobs: tuple[str, ...] = _key("scripts (absolute paths on the host) that cron must run", default=())
    crontabs: tuple[str, ...] = _key("crontab files on the host to read (default: root's `crontab -l`, "
                                     "/etc/crontab and /etc/cron.d/*)", default=())
    retired_scripts: tuple[str, ...] = _key("globs of retired scripts no active cron entry may run "
                                            "(paths containing '.retired' always count)", default=())
    backup_scripts: tuple[str, ...] = _key("backup scripts whose hardening is audited", default=())
    script_owner: str = _key("user that must own the backup scripts", default="root")
    shellcheck_severity: str = _key("lowest shellcheck severity that fails (error, warning, info, style, off)",
                                    default="warning")
    free_space_multiple: float = _key("free space on the backup filesystem must hold this many latest dumps",
                                      default=2.0)
    service: str = _key("systemd service of the database that must be running", default="")
    container: str = _key("docker container of the database that must be running", default="")
    process: str = _key("process name (comm) of the database that must be running, e.g. postgres",
                        default="")
    process_args: str = _key("text the process's command line must contain, e.g. its data directory",
                             default="")


@dataclass(frozen=True)
class OffsiteSection:
    remote: str = _key("rclone remote path holding the archives, e.g. gdrive:backups or :local:/srv/offsite")
    archive_glob: str = _key("glob of the nightly archives in that path", default="vps-backup-*.tar.gz")
    member: str = _key("glob of the PostgreSQL dump inside an archive", default="*/postgresql-directus.sql.gz")
    max_age_hours: float = _key("newest archive must be younger than this", default=26.0)
    min_archive_bytes: int = _key("newest archive must be at least this big", default=1024)
    size_tolerance: float = _key("allowed size difference of the member vs the local dump of the same night "
                                 "(0.05 = 5%)", default=0.05)
    rclone: str = _key("rclone binary", default="rclone")


@dataclass(frozen=True)
class SqlCheck:
    name: str = _key("name of the check as shown in reports and Kuma messages")
    query: str = _key("SQL run in the read-only audit transaction")
    expect: str = _key("'no_rows' (every returned row is a finding) or 'true' (one boolean)")
    fix: str = _key("one line telling the operator what to do when it fails")
    concern: str = _key("marker it is routed under (grants, dumps, ...; default: sql)", default="sql")
    timeout_s: float = _key("statement timeout in seconds", default=30.0)


SQL_EXPECT = ("no_rows", "true")


@dataclass(frozen=True)
class TrendsSection:
    restore_budget_seconds: float = _key("the restore drill must finish within this many seconds", default=3600.0)
    payload_window: int = _key("earlier runs whose median payload is the trend", default=7)
    payload_factor: float = _key("the payload may be at most this factor above or below the trend", default=1.5)
    min_history: int = _key("earlier runs with a payload needed before the trend is judged", default=3)


@dataclass(frozen=True)
class DrillSection:
    mode: str = _key("where the drill restores: throwaway (local cluster), scratch (database on "
                     "server_dsn) or off", default="throwaway")
    server_dsn: str = _key("scratch mode: libpq string of a server where the drill may create databases "
                           "(role with CREATEDB), WITHOUT password", default="")
    prefix: str = _key("name prefix of every drill database; nothing without it is ever created or dropped",
                       default="restore_drill_")
    work_dir: Path | None = _key("directory for throwaway clusters and spool files (default: system temp)",
                                 path="dir", default=None)
    lock_file: Path | None = _key("file locked (flock) while a drill runs (default: <work_dir>/"
                                  "pgbackup-verify-drill.lock)", default=None)
    expected_schemas: tuple[str, ...] = _key("schemas the restore must hold (default: "
                                             "[backups].expected_schemas)", default=())
    min_tables: tuple[tuple[str, int], ...] = _key("table: schema -> minimum tables after restore "
                                                   "(default 1 per expected schema)", default=())
    min_sequences: int = _key("minimum sequences after restore", default=0)
    min_views: int = _key("minimum views after restore", default=0)
    min_functions: int = _key("minimum functions after restore", default=0)
    expect_live_catalog: bool = _key("also expect every live schema, table, sequence, view and function "
                                     "(minus [database].exclude_schemas)", default=False)
    roles: tuple[str, ...] = _key("throwaway mode: roles created before restoring a dump made without "
                                  "--no-owner", default=())
    jobs: int = _key("parallel jobs of pg_restore for custom-format dumps", default=2)
    time_limit_seconds: int = _key("the drill is stopped and fails after this long", default=3600)
    disk_factor: float = _key("free disk needed = payload x this factor (throwaway mode)", default=2.0)
    stale_minutes: float = _key("a leftover drill database/cluster of a live process older than this is "
                                "removed too", default=240.0)
KUMA_MARKERS = ("grants", "dumps", "drill", "kuma", "host", "offsite")


@dataclass(frozen=True)
class KumaPushSection:
    monitor: str = _key("name of the Kuma push monitor (as shown in Kuma)")
    token_env: str = _key("environment variable holding its push token (the token never goes in this file)")
    covers: tuple[str, ...] = _key(f"markers ({', '.join(KUMA_MARKERS)}, ...) or check modules (test_grants) "
                                   "it covers")


@dataclass(frozen=True)
class KumaSection:
    url: str = _key("base URL of Uptime Kuma, e.g. http://127.0.0.1:3001")
    push: tuple[KumaPushSection, ...] = _key("push monitors fed at the end of every run ([[kuma.push]])",
                                             default=())
    monitors: tuple[str, ...] = _key("more monitors (names) the kuma checks must find healthy", default=())
    read: str = _key("how the kuma checks read Kuma: 'db' (kuma.db, read-only) or 'socket'", default="")
    db: Path | None = _key("Kuma's SQLite file kuma.db, opened read-only (read = 'db')", path="file",
                           default=None)
    username_env: str = _key("env var with the Kuma user name (read = 'socket')", default="KUMA_USERNAME")
    password_env: str = _key("env var with the Kuma password (read = 'socket')", default="KUMA_PASSWORD")
    grace_seconds: int = _key("a monitor's last UP may be this much older than its interval", default=300)
    stale_days: float = _key("active with no UP for longer than this: stale, advise pausing it", default=7.0)
    push_timeout: float = _key("seconds per push attempt (one retry)", default=5.0)

    @property
    def read_path(self) -> str:
        """kuma.db when it is given (exact history, no credentials), else the Socket.IO API."""
        return self.read or ("db" if self.db else "socket")


@dataclass(frozen=True)
class Target:
    """One backed-up database host, as the checks see it."""

    source: Path
    target: TargetSection | None
    database: DatabaseSection
    backups: BackupsSection
    sql_check: tuple[SqlCheck, ...] = ()
    trends: TrendsSection | None = None  # optional section; absent = the defaults
    drill: DrillSection | None = None
    host_checks: HostSection | None = None  # the [host] section (`host` is the testinfra spec)
    offsite: OffsiteSection | None = None
    kuma: KumaSection | None = None

    @property
    def name(self) -> str:
        return (self.target.name if self.target else "") or self.source.stem

    @property
    def host(self) -> str:
        return self.target.host if self.target else "local://"

    def password(self) -> str | None:
        """The database password, read only when connecting, never stored in reports."""
        pf = self.database.password_file
        return pf.read_text().strip() if pf else None


# Section name -> (dataclass, required). Optional sections are None when absent.
SECTIONS: dict[str, tuple[type, bool]] = {
    "target": (TargetSection, False),
    "database": (DatabaseSection, True),
    "backups": (BackupsSection, True),
    "trends": (TrendsSection, False),
    "drill": (DrillSection, False),
    "host": (HostSection, False),
    "offsite": (OffsiteSection, False),
    "kuma": (KumaSection, False),
}
# Arrays of tables ([[name]]): section name -> dataclass of one entry.
LIST_SECTIONS: dict[str, type] = {"sql_check": SqlCheck}
# Section name -> Target attribute, where they differ.
ATTRIBUTES = {"host": "host_checks"}


def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            Path: "a path string"}.get(tp, "a list of strings")


def _convert(value: Any, tp: Any, where: str, base: Path, path_kind: str | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return _convert(value, inner, where, base, path_kind)
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        table = where.replace("[", "").replace("]", "")  # "[kuma].push" -> "kuma.push"
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected an array of tables [[{table}]], got {value!r}")
        return tuple(_build(typing.get_args(tp)[0], v, f"{table} #{i + 1}", base) for i, v in enumerate(value))
    if origin is tuple and typing.get_args(tp)[0] is not str:  # a TOML table of name -> integer
        if not isinstance(value, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                  for v in value.values()):
            raise ConfigError(f"{where}: expected a table of name = integer >= 0, got {value!r}")
        return tuple(sorted(value.items()))
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        p = Path(os.path.expanduser(value))
        p = p if p.is_absolute() else base / p
        _check_path(p, where, path_kind)
        return p
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _check_path(p: Path, where: str, kind: str | None) -> None:
    if kind == "dir" and not p.is_dir():
        raise ConfigError(f"{where}: directory '{p}' does not exist; create it or fix the path")
    if kind == "file" and not p.is_file():
        raise ConfigError(f"{where}: file '{p}' does not exist; create it or fix the path")
    if kind and not os.access(p, os.R_OK | (os.X_OK if kind == "dir" else 0)):
        raise ConfigError(f"{where}: '{p}' is not readable by this user; fix its permissions")


def _build(cls: type, table: Any, where: str, base: Path) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table [{where}], got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key == "token" and "token_env" in fields:
            raise ConfigError(f"[{where}].token: push tokens are secrets and never go in the target file; "
                              "put it in an environment variable and name that in token_env")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(fields)}"
            raise ConfigError(f"[{where}].{key}: unknown key; {hint} (see {EXAMPLE})")
    values = {}
    for name, f in fields.items():
        if name in table:
            values[name] = _convert(table[name], hints[name], f"[{where}].{name}", base,
                                    f.metadata.get("path"))
        elif f.default is dataclasses.MISSING:
            raise ConfigError(f"[{where}].{name}: required key is missing; add it ({f.metadata['help']})")
    return cls(**values)


def _sql_checks(raw: Any, base: Path) -> tuple[SqlCheck, ...]:
    if not isinstance(raw, list):
        raise ConfigError("[sql_check]: write it as an array of tables, [[sql_check]]")
    checks = tuple(_build(SqlCheck, entry, f"sql_check.{i}", base) for i, entry in enumerate(raw))
    names = [c.name for c in checks]
    for i, c in enumerate(checks):
        if c.expect not in SQL_EXPECT:
            raise ConfigError(f"[[sql_check]] '{c.name}'.expect: '{c.expect}' is not one of {', '.join(SQL_EXPECT)}")
        if names.count(c.name) > 1:
            raise ConfigError(f"[[sql_check]] #{i + 1}.name: '{c.name}' is used twice; give each check its own name")
    return checks


def _validate(t: Target) -> None:
    try:
        params = psycopg.conninfo.conninfo_to_dict(t.database.dsn)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"[database].dsn: not a valid libpq connection string ({e})") from None
    if "password" in params:
        raise ConfigError("[database].dsn: contains a password; remove it and use PGPASSWORD, "
                          "~/.pgpass or [database].password_file")
    if t.kuma:
        _validate_kuma(t.kuma)
    b = t.backups
    if not 0 <= b.max_shrink_ratio < 1:
        raise ConfigError(f"[backups].max_shrink_ratio: {b.max_shrink_ratio} is not in [0, 1); "
                          "use e.g. 0.2 for 20%")
    for key in ("max_age_hours", "retention_days", "min_payload_bytes"):
        if getattr(b, key) <= 0:
            raise ConfigError(f"[backups].{key}: must be greater than 0")
    if t.trends is not None:
        _validate_trends(t.trends)
    if t.drill:
        _validate_drill(t.drill)
    if t.host_checks:
        _validate_host(t.host_checks)
    if t.offsite:
        _validate_offsite(t.offsite)


def _validate_trends(tr: TrendsSection) -> None:
    if tr.restore_budget_seconds <= 0:
        raise ConfigError("[trends].restore_budget_seconds: must be greater than 0, e.g. 3600 for one hour")
    if tr.payload_factor <= 1:
        raise ConfigError(f"[trends].payload_factor: {tr.payload_factor} must be greater than 1; "
                          "use e.g. 1.5 to allow +50% / -33% against the trend")
    for key in ("payload_window", "min_history"):
        if getattr(tr, key) < 1:
            raise ConfigError(f"[trends].{key}: must be at least 1")
    if tr.min_history > tr.payload_window:
        raise ConfigError(f"[trends].min_history: {tr.min_history} is more than payload_window "
                          f"{tr.payload_window}; lower it or widen the window")


def _validate_drill(d: DrillSection) -> None:
    if d.mode not in ("throwaway", "scratch", "off"):
        raise ConfigError(f"[drill].mode: '{d.mode}' is not one of throwaway, scratch, off")
    if d.mode == "scratch" and not d.server_dsn:
        raise ConfigError("[drill].server_dsn: required when mode = 'scratch'; give the server the drill "
                          "may create restore_drill_* databases on")
    if d.server_dsn:
        try:
            params = psycopg.conninfo.conninfo_to_dict(d.server_dsn)
        except psycopg.ProgrammingError as e:
            raise ConfigError(f"[drill].server_dsn: not a valid libpq connection string ({e})") from None
        if "password" in params:
            raise ConfigError("[drill].server_dsn: contains a password; remove it and use PGPASSWORD or ~/.pgpass")
    if not re.fullmatch(r"[a-z][a-z0-9_]{5,30}_", d.prefix):
        raise ConfigError(f"[drill].prefix: '{d.prefix}' must be 6-31 lowercase letters/digits/_ ending in '_' "
                          "(e.g. restore_drill_)")
    for key in ("jobs", "time_limit_seconds"):
        if getattr(d, key) < 1:
            raise ConfigError(f"[drill].{key}: must be at least 1")
    if d.disk_factor < 1:
        raise ConfigError(f"[drill].disk_factor: {d.disk_factor} is below 1; the restore needs at least the payload")


def _validate_host(h: HostSection) -> None:
    if h.shellcheck_severity not in SHELLCHECK_SEVERITIES:
        raise ConfigError(f"[host].shellcheck_severity: '{h.shellcheck_severity}' is not one of "
                          f"{', '.join(SHELLCHECK_SEVERITIES)}")
    if h.free_space_multiple <= 0:
        raise ConfigError("[host].free_space_multiple: must be greater than 0; use e.g. 2 for two dumps")
    for key in ("cron_jobs", "crontabs", "backup_scripts"):
        for p in getattr(h, key):
            if not p.startswith("/"):
                raise ConfigError(f"[host].{key}: '{p}' is not an absolute path on the host; write it in full")
    if h.process_args and not h.process:
        raise ConfigError("[host].process_args: needs [host].process (the process name) too")


def _validate_offsite(o: OffsiteSection) -> None:
    if ":" not in o.remote:
        raise ConfigError(f"[offsite].remote: '{o.remote}' is not an rclone path; write REMOTE:PATH "
                          "(e.g. gdrive:backups or :local:/srv/offsite)")
    if not 0 <= o.size_tolerance < 1:
        raise ConfigError(f"[offsite].size_tolerance: {o.size_tolerance} is not in [0, 1); use e.g. 0.05 for 5%")
    if o.max_age_hours <= 0:
        raise ConfigError("[offsite].max_age_hours: must be greater than 0")


def _validate_kuma(k: KumaSection) -> None:
    if not k.url.startswith(("http://", "https://")):
        raise ConfigError(f"[kuma].url: '{k.url}' is not an http(s) URL; use e.g. http://127.0.0.1:3001")
    if k.read not in ("", "db", "socket"):
        raise ConfigError(f"[kuma].read: '{k.read}' is neither 'db' nor 'socket'")
    if k.read == "db" and not k.db:
        raise ConfigError("[kuma].db: required when read = 'db'; give the path of kuma.db or use read = 'socket'")
    if k.push_timeout <= 0 or k.stale_days <= 0 or k.grace_seconds < 0:
        raise ConfigError("[kuma].push_timeout, stale_days must be > 0 and grace_seconds >= 0")
    names = [p.monitor for p in k.push]
    for i, p in enumerate(k.push):
        where = f"[kuma.push #{i + 1}]"
        if names.count(p.monitor) > 1:
            raise ConfigError(f"{where}.monitor: '{p.monitor}' is listed twice; keep one entry per monitor")
        if not p.token_env.isidentifier():
            raise ConfigError(f"{where}.token_env: '{p.token_env}' is not an environment variable name")
        if not p.covers:
            raise ConfigError(f"{where}.covers: empty; list the markers or check modules this monitor reports")
        for c in p.covers:
            # Other markers (e.g. a [[sql_check]] concern) are allowed; a near miss of a known one is a
            # typo. An unknown group that matches nothing still pushes DOWN ("no check covering ...").
            close = difflib.get_close_matches(c, KUMA_MARKERS, n=1, cutoff=0.75)
            if c not in KUMA_MARKERS and not c.startswith("test_") and (close or not c.isidentifier()):
                hint = (f"did you mean '{close[0]}'?" if close
                        else f"use a marker ({', '.join(KUMA_MARKERS)}, ...) or test_<module>")
                raise ConfigError(f"{where}.covers: unknown check group '{c}'; {hint}")


def load_target(path: str | os.PathLike[str]) -> Target:
    """Read and validate one target file; raise ConfigError naming the key on any mistake."""
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"target file '{source}' does not exist; pass an existing file to --target") from None
    except OSError as e:
        raise ConfigError(f"target file '{source}' cannot be read ({e.strerror}); fix its permissions") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"target file '{source}': invalid TOML ({e}); fix the syntax") from None
    try:
        for section in raw:
            if section not in SECTIONS and section not in LIST_SECTIONS:
                close = difflib.get_close_matches(section, list(SECTIONS), n=1)
                hint = f"did you mean [{close[0]}]?" if close else f"allowed: {', '.join(SECTIONS)}"
                raise ConfigError(f"[{section}]: unknown section; {hint} (see {EXAMPLE})")
        base = source.resolve().parent
        built = {
            name: _build(cls, raw.get(name, {}), name, base) if name in raw or required else None
            for name, (cls, required) in SECTIONS.items()
        }
        target = Target(source=source, **{ATTRIBUTES.get(k, k): v for k, v in built.items()},
                        sql_check=_sql_checks(raw.get("sql_check", []), base))
        _validate(target)
    except ConfigError as e:
        raise ConfigError(f"target file '{source}': {e}") from None
    return target


def iter_target_files(path: Path) -> list[Path]:
    """A target file, or every *.toml in a directory of them (many hosts, one run)."""
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise ConfigError(f"target directory '{path}' holds no *.toml file; add one per host")
        return files
    return [path]
