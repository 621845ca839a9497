"""The target file: one TOML file per host, validated once into frozen dataclasses.

Every error is one line that names the file, the key and what to do, so that a typo
in a nightly cron job reads like a to-do item, not like a traceback.

This module is the generic loader: TOML -> the section dataclasses registered in SECTIONS,
typed by their field annotations, then each section's own validate(). The sections live in
`sections` (what is verified) and `sections_ops` (host, offsite, Kuma); they are re-exported
here so that `from pgbackup_verify.config import ...` stays the one import for callers.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pgbackup_verify.config import trust
from pgbackup_verify.config.ops import (
    KUMA_MARKERS,
    SHELLCHECK_SEVERITIES,
    HostSection,
    KumaPushSection,
    KumaSection,
    OffsiteSection,
    PrometheusSection,
)
from pgbackup_verify.config.sections import (
    SQL_EXPECT,
    BackupsSection,
    DatabaseSection,
    DrillSection,
    Section,
    SqlCheck,
    TargetSection,
    TrendsSection,
    is_remote,
)
from pgbackup_verify.errors import ConfigError

__all__ = [
    "ATTRIBUTES", "EXAMPLE", "KUMA_MARKERS", "LIST_SECTIONS", "SECTIONS", "SHELLCHECK_SEVERITIES",
    "SQL_EXPECT", "BackupsSection", "ConfigError", "DatabaseSection", "DrillSection", "HostSection",
    "KumaPushSection", "KumaSection", "OffsiteSection", "PrometheusSection", "SqlCheck", "Target", "TargetSection",
    "TrendsSection", "build_target", "iter_target_files", "load_section", "load_target",
]

EXAMPLE = "target.example.toml"


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
    prometheus: PrometheusSection | None = None

    @property
    def name(self) -> str:
        return (self.target.name if self.target else "") or self.source.stem

    @property
    def host(self) -> str:
        return self.target.host if self.target else "local://"

    def password(self) -> str | None:
        """The database password, read only when connecting, never stored in reports."""
        pf = self.database.password_file
        # Judged again on the file opened: it may have been swapped since the target was loaded.
        return trust.read_trusted(pf, "[database].password_file", secret=True).strip() if pf else None


class ListEntry(Protocol):
    """One entry of an array of tables: its class also validates the entries together."""

    @staticmethod
    def validate_all(entries: tuple[Any, ...]) -> None: ...


# Section name -> (dataclass, required). Optional sections are None when absent.
SECTIONS: dict[str, tuple[type[Section], bool]] = {
    "target": (TargetSection, False),
    "database": (DatabaseSection, True),
    "backups": (BackupsSection, True),
    "trends": (TrendsSection, False),
    "drill": (DrillSection, False),
    "host": (HostSection, False),
    "offsite": (OffsiteSection, False),
    "kuma": (KumaSection, False),
    "prometheus": (PrometheusSection, False),
}
# Arrays of tables ([[name]]): section name -> dataclass of one entry (with validate_all(entries)).
LIST_SECTIONS: dict[str, type[ListEntry]] = {"sql_check": SqlCheck}
# Section name -> Target attribute, where they differ.
ATTRIBUTES = {"host": "host_checks"}


def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            Path: "a path string"}.get(tp, "a list of strings")


def _convert(value: Any, tp: Any, where: str, base: Path, path_kind: str | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        if inner is str and isinstance(value, list):  # `str | tuple[str, ...]`: one name or a list of them
            inner = next((a for a in typing.get_args(tp) if typing.get_origin(a) is tuple), str)
        return _convert(value, inner, where, base, path_kind)
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        table = where.replace("[", "").replace("]", "")  # "[kuma].push" -> "kuma.push"
        if not isinstance(value, list):
            # Not the value: a single [kuma.push] table may hold a pasted push token.
            raise ConfigError(f"{where}: write it as an array of tables, [[{table}]]")
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


def _number(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else str(x)


def _range_problem(value: float, meta: Mapping[str, Any]) -> str | None:
    """Why a number is outside its key's range (`gt`/`ge`/`lt`; >= 0 when none is declared), or None."""
    if not math.isfinite(value):
        return "is not a finite number"
    gt, ge, lt = meta.get("gt"), meta.get("ge"), meta.get("lt")
    if gt is None and ge is None:
        ge = 0
    if lt is not None and ge is not None and not ge <= value < lt:
        return f"is not in [{_number(ge)}, {_number(lt)})"
    if gt is not None and not value > gt:
        return f"must be greater than {_number(gt)}"
    if ge is not None and not value >= ge:
        return f"must be at least {_number(ge)}"
    if lt is not None and not value < lt:
        return f"must be less than {_number(lt)}"
    return None


def glob_problem(pattern: str, kind: str) -> str | None:
    """Why `pattern` cannot be the glob it is meant to be (fnmatch never refuses one, it just matches
    nothing, so a typo would read as "no backup" instead of a config mistake), or None.

    kind 'name': matched against file names in a directory, so a '/' can never match."""
    if not pattern.strip():
        return "is empty"
    if "\0" in pattern:
        return "contains a NUL character"
    if kind == "name" and "/" in pattern:
        return "contains '/', but it is matched against file names only: drop the directory part"
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                return f"has a '[' at position {i + 1} that is never closed; write [[] for a literal '['"
            i = j
        i += 1
    return None


def _check_value(value: Any, where: str, f: dataclasses.Field[Any]) -> None:
    """The range of a number and the shape of a glob, declared on the key (sections.key)."""
    example = "" if f.default is dataclasses.MISSING or f.default in ("", ()) else f"; use e.g. {f.default}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        problem = _range_problem(value, f.metadata)
        if problem:
            raise ConfigError(f"{where}: {value} {problem}{example}")
    kind = f.metadata.get("glob")
    if kind:
        for pattern in (value,) if isinstance(value, str) else value:
            problem = glob_problem(pattern, kind)
            if problem:
                raise ConfigError(f"{where}: glob '{pattern}' {problem}{example}")


def _build(cls: type, table: Any, where: str, base: Path, remote: bool = False) -> Any:
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
            if remote and f.metadata.get("path") and not str(table[name]).startswith("/"):
                raise ConfigError(f"[{where}].{name}: '{table[name]}' is not an absolute path on the backup host "
                                  "([target].host); write it in full")
            # A path on a remote backup host is not looked for here: its checks say whether it is there.
            values[name] = _convert(table[name], hints[name], f"[{where}].{name}", base,
                                    None if remote else f.metadata.get("path"))
            _check_value(values[name], f"[{where}].{name}", f)
        elif f.default is dataclasses.MISSING:
            raise ConfigError(f"[{where}].{name}: required key is missing; add it ({f.metadata['help']})")
    return cls(**values)


def _build_list(cls: type[ListEntry], raw: Any, name: str, base: Path) -> tuple[Any, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"[{name}]: write it as an array of tables, [[{name}]]")
    entries = tuple(_build(cls, entry, f"{name} #{i + 1}", base) for i, entry in enumerate(raw))
    cls.validate_all(entries)
    return entries


def _validate(t: Target) -> None:
    # [database] and [kuma] first: the order from before the sections had their own
    # validate(), so a file with several mistakes still reports the same one.
    for name in sorted(SECTIONS, key=lambda n: n not in ("database", "kuma")):
        section = getattr(t, ATTRIBUTES.get(name, name))
        if section is not None:
            section.validate()
    if t.drill and t.drill.source == "offsite" and t.offsite is None:
        raise ConfigError("[drill].source: 'offsite' needs an [offsite] section to read the archive from; "
                          "add one or use source = \"local\"")


MAX_TARGET_BYTES = 1 << 20  # a target file is a few KB; anything near this is the wrong file


def shown(path: Path) -> str:
    """A path as it can be printed and written into a UTF-8 report: undecodable bytes as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _read_target(source: Path) -> str:
    """The target file's text, or a ConfigError saying why it is not a TOML file a person wrote."""
    where = f"target file '{shown(source)}'"
    try:
        # O_NONBLOCK: a FIFO named like a target must not hang the run at open().
        with os.fdopen(os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{where} is not a regular file; pass a TOML file or a directory of them")
            trust.check(st, "target file", shown(source))  # judged on the file opened, as sshd does
            data = f.read(MAX_TARGET_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist; pass an existing file to --target") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory; pass it as --target DIR (one *.toml per host)") from None
    except OSError as e:
        raise ConfigError(f"{where} cannot be read ({e.strerror}); fix its permissions") from None
    if len(data) > MAX_TARGET_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_TARGET_BYTES // 1024} KiB; a target file is a few KB "
                          "of TOML: pass the right file")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(f"{where} is UTF-16 text; save it as UTF-8")
    if b"\0" in data:
        raise ConfigError(f"{where} is a binary file, not TOML; pass the target file (see {EXAMPLE})")
    if data.startswith(codecs.BOM_UTF8):
        raise ConfigError(f"{where} starts with a byte-order mark, which TOML does not allow; "
                          "save it as UTF-8 without BOM")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{where} is not UTF-8 (byte 0x{data[e.start]:02x} on line {line}); "
                          "save it as UTF-8") from None


def build_target(raw: dict[str, Any], source: Path, base: Path) -> Target:
    """A validated Target from TOML-shaped tables (a target file's, or an inventory host's variables);
    relative paths are relative to `base`. ConfigError names `[section].key`, not the source."""
    for section in raw:
        if section not in SECTIONS and section not in LIST_SECTIONS:
            close = difflib.get_close_matches(section, list(SECTIONS), n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"allowed: {', '.join(SECTIONS)}"
            raise ConfigError(f"[{section}]: unknown section; {hint} (see {EXAMPLE})")
    # Built generically from the tables above, so typed per field only by Target itself.
    fields: dict[str, Any] = {
        ATTRIBUTES.get(name, name): _build(cls, raw.get(name, {}), name, base) if name in raw or required else None
        for name, (cls, required) in SECTIONS.items() if name != "backups"
    }
    fields["backups"] = _build(BackupsSection, raw.get("backups", {}), "backups", base,
                               remote=is_remote(fields["target"].host if fields["target"] else "local://"))
    fields.update({name: _build_list(cls, raw.get(name, []), name, base) for name, cls in LIST_SECTIONS.items()})
    target = Target(source=source, **fields)
    _validate(target)
    try:
        target.name.encode("utf-8")  # a file name's undecodable bytes are surrogates here
    except UnicodeEncodeError:
        raise ConfigError("[target].name: the file name is not UTF-8, and reports need a readable name; "
                          "add name = \"...\" or rename the file") from None
    return target


def load_target(path: str | os.PathLike[str]) -> Target:
    """Read and validate one target file; raise ConfigError naming the key on any mistake."""
    source = Path(path)
    text = _read_target(source)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"target file '{shown(source)}': invalid TOML ({e}); fix the syntax") from None
    try:
        target = build_target(raw, source, source.resolve().parent)
    except ConfigError as e:
        raise ConfigError(f"target file '{shown(source)}': {e}") from None
    return target


def load_section(path: Path, name: str) -> Any:
    """One validated section of a TOML file (e.g. a Kuma-only file for the push plugin used alone)."""
    try:
        raw = tomllib.loads(trust.read_trusted(path, "target file", limit=MAX_TARGET_BYTES))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"'{path}': cannot be read ({e}); fix it") from None
    cls, _ = SECTIONS[name]
    try:
        section = _build(cls, raw.get(name), name, path.resolve().parent)
        section.validate()
    except ConfigError as e:
        raise ConfigError(f"'{path}': {e}") from None
    return section


def iter_target_files(path: Path, strict: bool = True) -> list[Path]:
    """A target file, or every *.toml in a directory of them (many hosts, one run); with strict,
    an empty directory is a ConfigError."""
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files and strict:
            raise ConfigError(f"target directory '{path}' holds no *.toml file; add one per host")
        return files
    return [path]
