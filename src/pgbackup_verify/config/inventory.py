"""Targets from an Ansible inventory (`--inventory FILE`): a fleet described once, in the file Ansible reads.

Ansible parses the inventory, never us: `ansible-inventory --list` (the ansible-core package, the `ansible`
extra) runs in a child with a plain environment and prints every host with its variables already merged
the Ansible way (group vars, child groups, host vars, group_vars/ and host_vars/ beside the file).

Every host that ends up with at least one `pgbv_` variable is one target. A variable names a target key
as `pgbv_<section>_<key>` (`pgbv_backups_directory`, `pgbv_database_dump_role`, `pgbv_drill_mode`...);
a whole table is `pgbv_<section>` holding a mapping, and the arrays of tables are lists of mappings
(`pgbv_kuma_push`, `pgbv_sql_check`). The target is then validated by the same loader as a target file.
Its name is the inventory host name (or `pgbv_target_name`); its backup host is testinfra's ansible
backend on that inventory host (`ansible://NAME?ansible_inventory=FILE`, or `pgbv_target_host`), which
connects as Ansible would (ansible_host, ansible_user, ansible_port, ansible_ssh_private_key_file,
ansible_ssh_common_args...).

A value is data: a Jinja template (`{{ ... }}`) is refused (naming the variable) rather than rendered.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgbackup_verify.config import trust
from pgbackup_verify.config.loader import LIST_SECTIONS, SECTIONS, Target, build_target, shown
from pgbackup_verify.errors import ANSIBLE_MISSING, INVENTORY_INVALID, ConfigError
from pgbackup_verify.facts import childenv

PREFIX = "pgbv_"
PARSE_TIMEOUT_S = 120  # a dynamic inventory plugin may ask a cloud API; a static file takes about a second
MAX_OUTPUT = 64 << 20  # the JSON of a few thousand hosts; anything near this is not an inventory
_TABLES = {"kuma_push": ("kuma", "push")}  # an array of tables nested in a section, by its variable name


class InventoryError(ConfigError):
    """The inventory is missing, cannot be parsed, or a host of it lacks what its target needs."""

    exit_code = INVENTORY_INVALID


class AnsibleMissing(ConfigError):
    """--inventory (or an ansible:// host) needs ansible-core, which is not installed."""

    exit_code = ANSIBLE_MISSING


NEEDS_ANSIBLE = ("needs ansible-core, which is not installed; install it with pip install "
                 "'pgbackup-verify[ansible]' (or pip install ansible-core)")


def require_ansible(what: str) -> None:
    if importlib.util.find_spec("ansible") is None:
        raise AnsibleMissing(f"{what} {NEEDS_ANSIBLE}")


@dataclass(frozen=True)
class BrokenHost:
    """An inventory host whose target did not validate: the other hosts still run, this one fails."""

    source: Path
    name: str
    error: str


def _why(stderr: str) -> str:
    """The decisive sentence of ansible-inventory's error output (the cause of a plugin's failure, else
    its [ERROR] line), on one line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("<<< caused by >>>") and i + 1 < len(lines):
            return lines[i + 1][:300]
    errors = [ln for ln in lines if ln.startswith(("[ERROR]", "ERROR!"))]
    text = errors[-1] if errors else (lines[-1] if lines else "no output")
    return re.sub(r"^(\[ERROR\]:|ERROR!)\s*", "", text)[:300]


_parsed: dict[tuple[str, int, int], dict[str, Any]] = {}  # one ansible-inventory run per file and process


def parse(path: Path) -> dict[str, Any]:
    """`ansible-inventory --list` of `path`: {"_meta": {"hostvars": ...}, group: {"hosts", "children"}}.
    Read once per process while the file is unchanged: the targets and their connections share it."""
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    if key is not None and key in _parsed:
        return _parsed[key]
    data = _parse(path)
    if key is not None:
        _parsed[key] = data
    return data


def _parse(path: Path) -> dict[str, Any]:
    where = f"inventory '{shown(path)}'"
    if not path.exists():
        raise InventoryError(f"{where} does not exist; pass an existing Ansible inventory to --inventory")
    if not os.access(path, os.R_OK):
        raise InventoryError(f"{where} is not readable by this user; fix its permissions")
    # It names the hosts to log in to and the DSNs: judged like a target file (root's inputs, as sshd does).
    why = trust.problem(os.stat(path), shown(path))
    if why:
        raise InventoryError(f"{where} {why}")
    require_ansible(f"{where}:")
    env = {**childenv.plain(), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
           "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True", "ANSIBLE_VERBOSITY": "0", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_DEPRECATION_WARNINGS": "False", "PYTHONWARNINGS": "ignore"}
    # The same interpreter's ansible-core, whatever PATH cron gives (ansible-inventory's own entry point).
    cmd = [sys.executable, "-m", "ansible.cli.inventory", "--list", "-i", str(path)]
    try:
        res = subprocess.run(cmd, capture_output=True, env=env, timeout=PARSE_TIMEOUT_S, check=False,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InventoryError(f"{where}: ansible-inventory did not finish within {PARSE_TIMEOUT_S} s; check its "
                             "dynamic inventory plugins (ansible-inventory -i FILE --list)") from None
    if res.returncode != 0:
        why = _why(res.stderr.decode("utf-8", "replace"))
        raise InventoryError(f"{where}: Ansible cannot parse it ({why}); fix it until "
                             f"`ansible-inventory -i {shown(path)} --list` succeeds")
    if len(res.stdout) > MAX_OUTPUT:
        raise InventoryError(f"{where}: more than {MAX_OUTPUT >> 20} MiB of hosts and variables; split the fleet")
    try:
        data = json.loads(res.stdout)
    except ValueError:
        raise InventoryError(f"{where}: ansible-inventory printed no JSON; run `ansible-inventory -i "
                             f"{shown(path)} --list` to see why") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{where}: ansible-inventory printed no inventory; check the file")
    return data


def hosts_of(data: dict[str, Any], group: str = "all", seen: set[str] | None = None) -> list[str]:
    """Every host of `group` and its children, each once, in inventory order."""
    seen = set() if seen is None else seen
    out: list[str] = []
    entry = data.get(group) or {}
    for h in entry.get("hosts", []):
        if h not in out:
            out.append(h)
    for child in entry.get("children", []):
        if child not in seen:
            seen.add(child)
            out += [h for h in hosts_of(data, child, seen) if h not in out]
    return out


def variable_of(section: str, key: str = "") -> str:
    """The inventory variable of a target key (`[backups].directory` -> `pgbv_backups_directory`)."""
    name = section.replace(".", "_")
    return f"{PREFIX}{name}_{key}" if key else f"{PREFIX}{name}"


def _as_variable(message: str) -> str:
    """A loader message names `[section].key`; an inventory user wrote the variable: say both."""
    def repl(m: re.Match[str]) -> str:
        section, key = m.group(1), m.group(2)
        section = section.split(" #", 1)[0]
        return f"{variable_of(section, key)} ([{m.group(1)}].{key})"

    return re.sub(r"\[([a-z_.]+(?: #\d+)?)\]\.([a-z_]+)", repl, message, count=1)


def _plain(value: Any, where: str) -> Any:
    """Ansible's value as plain data; a Jinja template is refused, not rendered."""
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            raise InventoryError(f"{where}: is a Jinja template ({value[:60]!r}); pgbackup-verify reads inventory "
                                 "variables as data: write the value out")
        return str(value)
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    return value


def raw_target(name: str, hostvars: dict[str, Any], spec: str, where: str) -> dict[str, Any]:
    """The TOML-shaped tables of one host, from its `pgbv_` variables."""
    raw: dict[str, Any] = {"target": {"name": name, "host": spec}}
    sections = sorted([*SECTIONS, *LIST_SECTIONS, *_TABLES], key=len, reverse=True)
    # Whole tables first, so that a variable of one key wins over the same key in a table.
    for var in sorted((v for v in hostvars if v.startswith(PREFIX)), key=lambda v: v[len(PREFIX):] not in sections):
        rest = var[len(PREFIX):]
        value = _plain(hostvars[var], f"{where}: {var}")
        section = next((s for s in sections if rest == s or rest.startswith(f"{s}_")), None)
        if section is None:
            close = difflib.get_close_matches(rest.split("_", 1)[0], list(SECTIONS), n=1)
            hint = f"did you mean {variable_of(close[0])}_...?" if close else \
                f"write {PREFIX}<section>_<key> with a section of target.example.toml ({', '.join(SECTIONS)})"
            raise InventoryError(f"{where}: {var}: not a target key; {hint}")
        key = rest[len(section) + 1:]
        if section in _TABLES or section in LIST_SECTIONS:
            if key:
                raise InventoryError(f"{where}: {var}: {variable_of(section)} is a list of mappings, one per "
                                     "entry; write the whole list in it")
            outer, inner = _TABLES.get(section, (section, ""))
            if inner:
                raw.setdefault(outer, {})[inner] = value
            else:
                raw[outer] = value
        elif key:
            raw.setdefault(section, {})[key] = value
        elif isinstance(value, dict):
            raw.setdefault(section, {}).update(value)
        else:
            raise InventoryError(f"{where}: {var}: expected a mapping of [{section}] keys, got {value!r}; or set "
                                 f"one key as {variable_of(section, 'KEY')}")
    return raw


def load_inventory(path: Path) -> tuple[list[Target], list[BrokenHost]]:
    """The targets of one inventory, and its hosts whose target does not validate (each a one-line error
    naming the inventory, the host and the variable). InventoryError when the file itself is bad."""
    data = parse(path)
    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    absolute = Path(os.path.abspath(path))
    base = absolute.parent if absolute.is_file() else absolute
    targets: list[Target] = []
    broken: list[BrokenHost] = []
    for host in hosts_of(data):
        hv = hostvars.get(host) or {}
        if not any(str(v).startswith(PREFIX) for v in hv):
            continue  # not a database host of this fleet (web servers, the verification host...)
        where = f"inventory '{shown(path)}', host '{host}'"
        name = str(hv.get(variable_of("target", "name")) or host)
        try:
            if hv.get("ansible_password") or hv.get("ansible_ssh_pass"):
                raise InventoryError(f"{where}: ansible_password is set; log in with a key "
                                     "(ansible_ssh_private_key_file), never a password on a command line")
            raw = raw_target(host, hv, f"ansible://{host}?ansible_inventory={absolute}", where)
            try:
                targets.append(build_target(raw, absolute, base))
            except ConfigError as e:  # the loader's own line, the variable named beside its key
                raise InventoryError(f"{where}: {_as_variable(str(e))}") from None
        except InventoryError as e:
            broken.append(BrokenHost(absolute, name, str(e)))
    if not targets and not broken:
        raise InventoryError(f"inventory '{shown(path)}' has no host with a {PREFIX} variable; set at least "
                             f"{variable_of('database', 'dsn')}, {variable_of('database', 'dump_role')} and "
                             f"{variable_of('backups', 'directory')} on the database hosts (README: Ansible inventory)")
    return targets, broken
