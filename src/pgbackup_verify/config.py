"""The target file: one TOML file per host, validated once into frozen dataclasses.

Every error is one line that names the file, the key and what to do, so that a typo
in a nightly cron job reads like a to-do item, not like a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg.conninfo

CONFIG_ERROR_EXIT = 4  # pytest's USAGE_ERROR: a user mistake, not a failed check
EXAMPLE = "target.example.toml"


class ConfigError(Exception):
    """A user mistake in the target file or the options; str() is the one line to show."""


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
    "kuma": (KumaSection, False),
}


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
            if section not in SECTIONS:
                close = difflib.get_close_matches(section, list(SECTIONS), n=1)
                hint = f"did you mean [{close[0]}]?" if close else f"allowed: {', '.join(SECTIONS)}"
                raise ConfigError(f"[{section}]: unknown section; {hint} (see {EXAMPLE})")
        base = source.resolve().parent
        built = {
            name: _build(cls, raw.get(name, {}), name, base) if name in raw or required else None
            for name, (cls, required) in SECTIONS.items()
        }
        target = Target(source=source, **built)
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
