"""Run settings: options resolved once (CLI > env > ini > default) into a frozen dataclass."""

from __future__ import annotations

import grp
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgbackup_verify.config import ConfigError, Target, iter_target_files, load_target, shard
from pgbackup_verify.config.concerns import CONCERNS
from pgbackup_verify.config.loader import shown
from pgbackup_verify.config.sections import concern_problem
from pgbackup_verify.errors import CONFIG_ERROR, INVENTORY_INVALID

TARGET_ENV = "PGBACKUP_VERIFY_TARGET"
INVENTORY_ENV = "PGBACKUP_VERIFY_INVENTORY"
REPORTS_ENV = "PGBACKUP_VERIFY_REPORTS"
LOCK_ENV = "PGBACKUP_VERIFY_LOCK"
KEEP_ENV = "PGBACKUP_VERIFY_KEEP_REPORTS"
GROUP_ENV = "PGBACKUP_VERIFY_REPORTS_GROUP"
SHARD_ENV = "PGBACKUP_VERIFY_SHARD"
DEFAULT_KEEP = 30

# One help text per option, shared by the CLI flag and the ini key.
HELP = {
    "target": f"target file (TOML) or directory of them; repeatable. Env: {TARGET_ENV}",
    "inventory": ("Ansible inventory whose hosts with pgbv_ variables are targets (needs the ansible extra); "
                  f"repeatable, with or without --target. Env: {INVENTORY_ENV}"),
    "reports": ("directory for the HTML/JUnit/JSON reports and latest.* (default: ./reports under the directory "
                f"the run starts in; always printed as an absolute path). Env: {REPORTS_ENV}"),
    "reports_group": ("group that may read the reports: the directory becomes 0750 and its files 0640 in that "
                      f"group (default: none, 0700 and 0600). Env: {GROUP_ENV}"),
    "keep": f"timestamped reports to keep in the reports directory (default {DEFAULT_KEEP}). Env: {KEEP_ENV}",
    "lock": f"lock file; a second run while one holds it is refused (exit 14). Env: {LOCK_ENV}",
    "shard": ("K/N: check only shard K of N of the targets (sorted by name, dealt out in turn), to split a fleet "
              f"over N verification hosts. Env: {SHARD_ENV}"),
    "json": "also write the machine-readable run summary (JSON) to this file",
    "env_file": ("read KEY=\"value\" lines (PGPASSWORD, Kuma push tokens) into the run's environment as data, "
                 "never run by a shell; refused unless owned by root (or this user) and private"),
}


@dataclass(frozen=True)
class BrokenTarget:
    """A target file of a directory (or one of several) that did not load: the others still run, and
    this one counts as a failed check under its name."""

    source: Path
    name: str
    error: str  # the one-line ConfigError
    exit_code: int = CONFIG_ERROR
    from_inventory: bool = False  # a host of an Ansible inventory (`source`), not a TOML target file


@dataclass(frozen=True)
class Settings:
    targets: tuple[Target, ...]
    target_source: str  # where the target path came from, for messages and the header
    reports_dir: Path | None  # absolute
    keep_reports: int
    lock: Path | None
    broken: tuple[BrokenTarget, ...] = ()
    reports_gid: int | None = None  # --reports-group: may read the reports (0750/0640)


SETTINGS_KEY = pytest.StashKey[Settings]()  # resolved once in the core plugin's pytest_configure
TARGET_ATTR = "pgbv_target"  # an item that is not parametrized with a target names it here (a broken file)


class TargetFileItem(pytest.Item):
    """A broken target file among several: one failed check under its name (exit 4), the others run."""

    def __init__(self, *, broken: BrokenTarget, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.broken = broken
        setattr(self, TARGET_ATTR, broken)  # routed to that target, like a check parametrized with it

    def runtest(self) -> None:
        error = ConfigError(self.broken.error)
        error.exit_code = self.broken.exit_code  # an inventory host's: exit 19, as its whole inventory's
        raise error

    def reportinfo(self) -> tuple[Path, None, str]:
        what = "inventory host" if self.broken.from_inventory else "target file"
        return self.broken.source, None, f"{what} {self.broken.name}"


class BrokenTargets:
    """Registered by the core plugin when some target files did not load: adds their failed checks."""

    def __init__(self, broken: tuple[BrokenTarget, ...]) -> None:
        self.broken = broken

    @pytest.hookimpl(trylast=True)  # after -k/-m: a broken file is never deselected away
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        items.extend(TargetFileItem.from_parent(session, name=f"target_file_is_valid[{b.name}]",
                                                nodeid=f"target_file_is_valid[{b.name}]", broken=b)
                     for b in self.broken)


def _pick(config: pytest.Config, opt: str, ini: str, env: str) -> tuple[object, str]:
    value = config.getoption(opt, None)  # None also when the core plugin is not loaded (Kuma plugin alone)
    if value is not None and value != []:
        return value, "command line"
    if os.environ.get(env):
        return os.environ[env], f"env {env}"
    try:
        value = config.getini(ini)
    except ValueError:  # the ini key is registered by the core plugin
        value = None
    if value:
        return value, "ini"
    return None, "default"


def target_paths(config: pytest.Config) -> tuple[list[Path], str]:
    """The target files or directories asked for, and where that came from: the one place that decides."""
    raw, source = _pick(config, "pgbv_target", "pgbackup_verify_target", TARGET_ENV)
    paths = raw if isinstance(raw, list) else ([raw] if raw else [])
    return [Path(str(p)) for p in paths], source


def inventory_paths(config: pytest.Config) -> list[Path]:
    """The Ansible inventories asked for (--inventory, env, ini)."""
    raw, _ = _pick(config, "pgbv_inventory", "pgbackup_verify_inventory", INVENTORY_ENV)
    paths = raw if isinstance(raw, list) else ([raw] if raw else [])
    return [Path(str(p)) for p in paths]


def _load(f: Path, registry: Collection[str]) -> Target:
    t = load_target(f)
    for c in t.sql_check:
        problem = concern_problem(c.concern, registry)
        if problem:
            raise ConfigError(f"target file '{shown(f)}': [[sql_check]] '{c.name}'.concern: {problem} "
                              "(a site adds its own with the pytest_pgbackup_verify_concerns hook)")
    return t


def load_targets(paths: list[Path], registry: Collection[str] = CONCERNS,
                 inventories: Collection[Path] = ()) -> tuple[list[Target], list[BrokenTarget]]:
    """Every target file named, and every target of the Ansible inventories; when there are several, a
    broken one is set aside (named, it fails the run) so that one typo does not stop every other host
    from being checked. A single file, or a run whose every target is broken, raises the first
    ConfigError: there is nothing to check. An inventory that cannot be read raises its InventoryError."""
    files = [f for p in paths for f in iter_target_files(p)]
    targets: list[Target] = []
    broken: list[BrokenTarget] = []
    first: ConfigError | None = None
    for f in files:
        try:
            targets.append(_load(f, registry))
        except ConfigError as e:
            first = first or e
            broken.append(BrokenTarget(f, shown(Path(f.stem)), str(e)))
    for inv in inventories:
        from pgbackup_verify.config import inventory  # ansible-core is needed only when an inventory is named

        loaded, hosts = inventory.load_inventory(inv)
        for t in loaded:
            problem = next((concern_problem(c.concern, registry) for c in t.sql_check
                            if concern_problem(c.concern, registry)), None)
            if problem:
                hosts.append(inventory.BrokenHost(t.source, t.name, f"inventory '{shown(inv)}', host '{t.name}': "
                                                  f"pgbv_sql_check concern: {problem}"))
            else:
                targets.append(t)
        for h in hosts:
            first = first or inventory.InventoryError(h.error)  # exit 19 when every target is broken
            broken.append(BrokenTarget(h.source, h.name, h.error, INVENTORY_INVALID, from_inventory=True))
    if first is not None and not targets:
        raise first
    names = [t.name for t in targets] + [b.name for b in broken]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"target name '{dupes[0]}' is used twice; give each [target].name its own value")
    return targets, broken


def reports_path(config: pytest.Config, have_targets: bool) -> Path | None:
    """The reports directory, absolute (relative ones are under the directory the run started in);
    None when neither a target nor a reports directory was named (a plain pytest run of another suite)."""
    reports, _ = _pick(config, "pgbv_reports", "pgbackup_verify_reports", REPORTS_ENV)
    if not reports and not have_targets:
        return None
    return Path(os.path.abspath(config.invocation_params.dir / str(reports or "reports")))


LOADED_KEY = pytest.StashKey[tuple[list[Target], list[BrokenTarget]]]()


def loaded_targets(config: pytest.Config, registry: Collection[str] = CONCERNS
                   ) -> tuple[list[Target], list[BrokenTarget]]:
    """The targets of the run, read once (an inventory costs an ansible-inventory run): the core plugin
    reads them before pytest configures, to exit with an inventory's own code (19, 20)."""
    if LOADED_KEY not in config.stash:
        paths, _ = target_paths(config)
        targets, broken = load_targets(paths, registry, inventory_paths(config))
        shard_raw, shard_source = _pick(config, "pgbv_shard", "pgbackup_verify_shard", SHARD_ENV)
        if shard_raw:
            k, n = shard.parse(str(shard_raw), shard_source)
            part = shard.mine([t.name for t in targets] + [b.name for b in broken], k, n)
            targets, broken = [t for t in targets if t.name in part], [b for b in broken if b.name in part]
            if broken and not targets:  # as a run whose every target is broken: nothing to check
                error = ConfigError(broken[0].error)
                error.exit_code = broken[0].exit_code
                raise error
        config.stash[LOADED_KEY] = (targets, broken)
    targets, broken = config.stash[LOADED_KEY]
    return list(targets), list(broken)


def resolve(config: pytest.Config, registry: Collection[str] = CONCERNS) -> Settings:
    """The run's settings; `registry` is the run's concerns (a site may add some), which every
    [[sql_check]].concern must name."""
    _, source = target_paths(config)
    inventories = inventory_paths(config)
    if inventories:
        where = ", ".join(f"inventory {shown(p)}" for p in inventories)
        source = where if source == "default" else f"{source} and {where}"
    targets, broken = loaded_targets(config, registry)
    reports_dir = reports_path(config, bool(targets))
    keep_raw, keep_source = _pick(config, "pgbv_keep", "pgbackup_verify_keep_reports", KEEP_ENV)
    try:
        keep = DEFAULT_KEEP if keep_raw is None else int(str(keep_raw))
        if keep < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"invalid keep-reports '{keep_raw}' from {keep_source}; use a whole number >= 1") from None
    return Settings(targets=tuple(targets), target_source=source, reports_dir=reports_dir,
                    keep_reports=keep, lock=lock_path(config), broken=tuple(broken), reports_gid=reports_gid(config))


def reports_gid(config: pytest.Config) -> int | None:
    """The group --reports-group names (a name or a number), None without one."""
    raw, source = _pick(config, "pgbv_reports_group", "pgbackup_verify_reports_group", GROUP_ENV)
    if raw is None:
        return None
    try:
        return int(str(raw)) if str(raw).isdigit() else grp.getgrnam(str(raw)).gr_gid
    except KeyError:
        raise ConfigError(f"reports group '{raw}' from {source} does not exist; name an existing group "
                          "(getent group) or leave it out for reports only root reads") from None


def lock_path(config: pytest.Config) -> Path | None:
    raw, _ = _pick(config, "pgbv_lock", "pgbackup_verify_lock", LOCK_ENV)
    return Path(str(raw)) if raw else None


def reroot_without_target_values(config: pytest.Config, args: list[str]) -> None:
    """Make `pytest --target FILE` behave like `pytest --target=FILE`.

    pytest chooses its rootdir and ini file before plugins' options exist, so it takes the FILE
    of `--target FILE` for a test path: a target file outside the checkout then hides the
    checkout's pytest.ini (its testpaths and addopts), and the self-tests got collected as checks.
    Redo that choice without the target values, once the option is known. (`pgbackup-verify` names
    its rootdir and ini file on the command line, so this changes nothing there.)

    pytest has no public way to redo it: this calls `_pytest.config.findpaths.determine_setup` and
    sets Config's private `_rootpath/_inipath/_inicfg/_inicache`, hence `pytest<10` in pyproject.toml;
    an unexpected signature leaves pytest's own choice in place.
    """
    ns = config.known_args_namespace
    values = {str(v) for v in (getattr(ns, "pgbv_target", None) or []) + (getattr(ns, "pgbv_inventory", None) or [])}
    if not values:
        return
    try:
        from _pytest.config.findpaths import determine_setup

        rootpath, inipath, inicfg, _ = determine_setup(
            inifile=ns.inifilename, override_ini=ns.override_ini,
            args=[a for a in ns.file_or_dir if a not in values], rootdir_cmd_arg=ns.rootdir or None,
            invocation_dir=config.invocation_params.dir)
    except (ImportError, TypeError, ValueError):  # another pytest's internals: keep its choice
        return
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return
    config._rootpath, config._inipath, config._inicfg = rootpath, inipath, inicfg
    config._inicache.clear()
    ns.confcutdir = str(inipath.parent if inipath else rootpath)
    args[:0] = [str(a) for a in config.getini("addopts")]
