"""pytest plugin: options, hooks and the default fixture instances. The work lives elsewhere."""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

from pgbackup_verify import fixtures as factories
from pgbackup_verify import hooks, runlock
from pgbackup_verify.config import ConfigError, Target, envfile, load_target
from pgbackup_verify.config.settings import (
    HELP,
    SETTINGS_KEY,
    BrokenTargets,
    inventory_paths,
    loaded_targets,
    lock_path,
    reports_path,
    reroot_without_target_values,
    resolve,
)
from pgbackup_verify.errors import CONFIG_ERROR, INTERNAL_ERROR, INTERRUPTED, UserError
from pgbackup_verify.evidence import order_checks
from pgbackup_verify.facts import history
from pgbackup_verify.facts.history import HISTORY_FILE
from pgbackup_verify.fixtures.core import HISTORY_PATH_KEY, RUN_FACTS_KEY, TARGET_FILE_ATTR
from pgbackup_verify.outcome import ABORTS, USER_ERROR_ATTR
from pgbackup_verify.report import files as report
from pgbackup_verify.report.console import printable
from pgbackup_verify.report.figures import figures_line
from pgbackup_verify.report.summary import (
    REFUSED_KEY,
    CrashWitness,
    RunSummary,
    SigTermInterrupts,
    check_lines,
    concerns,
    crash_reason,
    recorder,
    refuse,
    routing_properties,
    write_json,
)
from pgbackup_verify.xdist import make_scheduler, summary_lines, wants_target_scheduling

SUMMARY_KEY = pytest.StashKey[RunSummary]()
JSON_PATH_KEY = pytest.StashKey[Path | None]()
LOCK_KEY = pytest.StashKey[runlock.FileLock]()
SITE_TARGETS_KEY = pytest.StashKey[dict[Path, Target]]()  # target files named by a site's conftest
SESSION_KEY = pytest.StashKey[bool]()  # a session finished: pytest-html and junitxml wrote their reports


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """A site's conftest.py extends the suite through these (see hooks.py), as with pytest-html."""
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgbackup-verify")
    for flag, dest, ini, kw in (
        ("--target", "pgbv_target", "pgbackup_verify_target", {"action": "append", "metavar": "FILE|DIR"}),
        ("--inventory", "pgbv_inventory", "pgbackup_verify_inventory", {"action": "append", "metavar": "FILE"}),
        ("--reports-dir", "pgbv_reports", "pgbackup_verify_reports", {"metavar": "DIR"}),
        ("--reports-group", "pgbv_reports_group", "pgbackup_verify_reports_group", {"metavar": "GROUP"}),
        ("--keep-reports", "pgbv_keep", "pgbackup_verify_keep_reports", {"metavar": "N"}),
        ("--lock", "pgbv_lock", "pgbackup_verify_lock", {"metavar": "FILE"}),
        ("--shard", "pgbv_shard", "pgbackup_verify_shard", {"metavar": "K/N"}),
    ):
        key = dest.removeprefix("pgbv_")
        group.addoption(flag, dest=dest, default=None, help=HELP[key], **kw)
        parser.addini(ini, HELP[key])
    group.addoption("--json", dest="pgbv_json", default=None, metavar="FILE", help=HELP["json"])
    group.addoption("--env-file", dest="pgbv_env_file", default=None, metavar="FILE", help=HELP["env_file"])


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    reroot_without_target_values(early_config, args)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """Read --env-file and refuse an overlapping run before anything else happens (no report, no Kuma push)."""
    if hasattr(config, "workerinput"):
        return None  # xdist workers inherit the environment and run under their controller's lock
    env_file = config.getoption("pgbv_env_file", None)
    if env_file:
        try:
            os.environ.update(envfile.read(Path(env_file)))  # before any setting or secret is read
        except ConfigError as e:
            print(f"pgbackup-verify: {e}", file=sys.stderr)
            return CONFIG_ERROR
    if inventory_paths(config):
        code = _read_inventories(config)
        if code is not None:
            return code
    path = lock_path(config)
    if path is None:
        return None
    try:
        config.stash[LOCK_KEY] = runlock.acquire(path)
    except (runlock.LockHeld, runlock.LockUnsafe) as e:
        print(f"pgbackup-verify: {e}", file=sys.stderr)
        return e.exit_code
    return None


def _read_inventories(config: pytest.Config) -> int | None:
    """Read the targets now when an Ansible inventory is named: an inventory that cannot be read, or a
    missing ansible-core, ends the run with its own exit code (19, 20) and one line, before pytest
    configures (where any error of the options is a usage error, exit 4). latest.* says NOT CHECKED."""
    try:
        loaded_targets(config, concerns(config))
    except ConfigError as e:
        if e.exit_code == CONFIG_ERROR:
            return None  # a target file's mistake: refused as a usage error when pytest configures (exit 4)
        print(f"pgbackup-verify: {e}", file=sys.stderr)
        json_copy = config.getoption("pgbv_json", None)
        why = report.publish_not_checked(reports_path(config, True), f"config error: {e}", e.exit_code,
                                         Path(os.path.abspath(json_copy)) if json_copy else None)
        if why:
            print(f"pgbackup-verify: {why}", file=sys.stderr)
        return e.exit_code
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(CrashWitness(config), "pgbackup-verify-crash-witness")
    try:
        _configure(config)
    except pytest.UsageError as e:
        config.stash.setdefault(REFUSED_KEY, (f"usage error: {e}", CONFIG_ERROR))
        raise
    except KeyboardInterrupt:
        refuse(config, ABORTS[INTERRUPTED], INTERRUPTED)
        raise
    except Exception as e:
        refuse(config, crash_reason(e), INTERNAL_ERROR)
        raise


def _configure(config: pytest.Config) -> None:
    for name, text in concerns(config).items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        settings = resolve(config, concerns(config))
    except ConfigError as e:
        refuse(config, f"config error: {e}")
        raise pytest.UsageError(str(e)) from None
    config.stash[SETTINGS_KEY] = settings
    if settings.broken:
        config.pluginmanager.register(BrokenTargets(settings.broken), "pgbackup-verify-broken-targets")
    config.stash[RUN_FACTS_KEY] = {}
    config.stash[SUMMARY_KEY] = recorder(config).summary  # the run's one fold, shared with the Kuma plugin
    config.pluginmanager.register(HtmlTitle(config.stash[SUMMARY_KEY]), "pgbackup-verify-html-title")
    json_path = None
    if settings.reports_dir and not hasattr(config, "workerinput"):
        try:
            json_path = report.plan_reports(config, settings.reports_dir, settings.reports_gid)
        except pytest.UsageError:
            refuse(config, "", CONFIG_ERROR)  # "": no reports can be written there, so none are tried
            raise
    if not hasattr(config, "workerinput"):  # reports or not, a SIGTERM ends the run as interrupted (exit 2)
        SigTermInterrupts.install(config.stash[SUMMARY_KEY].fold)
    config.stash[JSON_PATH_KEY] = json_path
    config.stash[HISTORY_PATH_KEY] = settings.reports_dir / HISTORY_FILE if settings.reports_dir else None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """xdist `-n N`: one target's checks per worker, targets in parallel (see many.py)."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings and len(settings.targets) > 1 and wants_target_scheduling(config):
        return make_scheduler(config, log, [t.name for t in settings.targets])
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS_KEY, None)
    if not settings or not settings.targets:
        return []
    lines = [f"pgbackup-verify: {len(settings.targets)} target(s) from {settings.target_source}"]
    lines += [f"  {b.name}: BROKEN target file, counted as a failed check: {b.error}" for b in settings.broken]
    for t in settings.targets:
        lines.append(f"  {t.name}: file {t.source}, host {t.host}, dump role {t.database.dump_role}, "
                     f"backups {t.backups.directory}/{t.backups.pattern}")
    return lines


def site_targets(config: pytest.Config, path: Path) -> tuple[Target, ...] | None:
    """The target a site's conftest.py gives the checks under it (fixtures.target_from_file), or None.

    Found through public APIs only: conftest modules are plugins; the nearest one above `path` whose
    `target` fixture carries the factory's mark wins over --target, as its fixture would.
    """
    best: tuple[int, Path] | None = None
    for plugin in config.pluginmanager.get_plugins():
        marked = getattr(getattr(plugin, "target", None), TARGET_FILE_ATTR, None)
        where = getattr(plugin, "__file__", None)
        if marked is None or where is None:
            continue
        base = Path(where).resolve().parent
        if base in path.resolve().parents and (best is None or len(base.parts) > best[0]):
            best = (len(base.parts), marked if marked.is_absolute() else base / marked)
    if best is None:
        return None
    loaded = config.stash.setdefault(SITE_TARGETS_KEY, {})
    if best[1] not in loaded:  # read once per run, not once per check function
        try:
            loaded[best[1]] = load_target(best[1])
        except ConfigError as e:
            refuse(config, f"config error: {e}")
            raise pytest.UsageError(str(e)) from None
    return (loaded[best[1]],)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash.get(SETTINGS_KEY, None)
    if not settings or "target" not in metafunc.fixturenames:
        return
    targets = site_targets(metafunc.config, metafunc.definition.path) or settings.targets
    if not targets:
        return
    if "sql_check" in metafunc.fixturenames:
        # [[sql_check]] is optional: a target without any gets one not-applicable skip, named in the
        # report, instead of an empty parametrization (which pytest turns into a NOTSET parameter).
        params = [pytest.param(t, c, id=f"{t.name}-{c.name}") for t in targets for c in t.sql_check]
        params += [pytest.param(t, None, id=t.name, marks=pytest.mark.skip(
            reason=f"not applicable: target '{t.name}' declares no [[sql_check]]"))
            for t in targets if not t.sql_check]
        metafunc.parametrize(("target", "sql_check"), params, indirect=["target"], scope="session")
        return
    metafunc.parametrize("target", targets, ids=[t.name for t in targets], indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def without_target(i: pytest.Item) -> bool:
        callspec = getattr(i, "callspec", None)
        return "target" in getattr(i, "fixturenames", ()) and (callspec is None or "target" not in callspec.params)

    if any(without_target(i) for i in items):
        msg = ("no target file: the checks need one; pass --target FILE, set PGBACKUP_VERIFY_TARGET "
               "or the pgbackup_verify_target ini key (see target.example.toml)")
        refuse(config, f"usage error: {msg}")
        raise pytest.UsageError(msg)
    for item in items:
        callspec = getattr(item, "callspec", None)
        check = callspec.params.get("sql_check") if callspec else None
        if check is not None and check.concern != "sql":
            # Route a custom check to the same Kuma monitor as the built-in checks of its concern.
            item.add_marker(check.concern)
        if "target" in getattr(item, "fixturenames", ()):
            item.user_properties.extend(routing_properties(item))
    # Upstream checks first within each target (grants, dumps, drill...): see outcome.CAUSE_ORDER.
    items[:] = order_checks(items, concerns(config))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    rep: pytest.TestReport = yield  # type: ignore[assignment]
    if call.excinfo is not None and isinstance(call.excinfo.value, UserError):
        # An operator's problem (unreachable database...): one line, no traceback.
        rep.longrepr = f"{type(call.excinfo.value).__name__}: {call.excinfo.value}"
        setattr(rep, USER_ERROR_ATTR, call.excinfo.value.exit_code)  # the fold sets the run's exit code
    elif (call.excinfo is not None and call.excinfo.errisinstance(AssertionError)
          and "target" in getattr(item, "fixturenames", ())
          and item.config.option.tbstyle == "auto" and str(call.excinfo.value)):
        # A site check that fails with a bare `assert cond, "finding"` (the shipped ones use evidence.fail):
        # the assertion's introspection would only bury it. --tb=long brings it back.
        rep.longrepr = str(call.excinfo.value).split("\nassert ")[0]
    report.attach_evidence(item, rep)
    _printable_report(rep)
    return rep


def _printable_report(rep: pytest.TestReport) -> None:
    """Every finding and evidence section passes here before any output (terminal, cron mail, JSON,
    HTML, Kuma): names and messages from the database or Kuma lose their terminal control characters."""
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        rep.longrepr = (longrepr[0], longrepr[1], printable(str(longrepr[2])))
    elif longrepr is not None and (text := str(longrepr)) != printable(text):
        rep.longrepr = printable(text)  # a traceback object with a control character: its text, made safe
    rep.sections = [(title, printable(content)) for title, content in rep.sections]



@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str],
                                session: pytest.Session) -> None:
    run = session.config.stash.get(SUMMARY_KEY, None)
    settings = session.config.stash.get(SETTINGS_KEY, None)
    if run is not None and settings is not None and settings.targets:  # an aborted run says so too
        extra = report.trends_section(settings, session.config.stash.get(HISTORY_PATH_KEY, None))
        prefix.append(run.html(concerns(session.config), extra, [t.name for t in settings.targets]))


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: object) -> None:
    report.title = "pgbackup-verify report"  # type: ignore[attr-defined]


class HtmlTitle:
    """The verdict, the targets and how many causes (`FAILED · demo · 2 causes`) as the HTML report's title,
    what a browser tab or a mail subject shows. pytest-html asks for the title at session start, before any
    verdict: this object keeps its report and retitles it when the summary is written, at session finish."""

    def __init__(self, run: RunSummary) -> None:
        self.run = run
        self.report: object | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_report_title(self, report: object) -> None:
        self.report = report

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self) -> None:
        if self.report is not None:
            self.report.title = self.run.title()  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    config.stash[SESSION_KEY] = True
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        # An xdist worker: hand the figures to the controller (testnodedown); outcomes travel on reports.
        workeroutput["pgbackup_verify"] = {"facts": config.stash.get(RUN_FACTS_KEY, {})}
        return
    if SUMMARY_KEY in config.stash:
        run = config.stash[SUMMARY_KEY]
        if session.exitstatus in (0, 1):
            session.exitstatus = run.fold.exit_code(int(session.exitstatus))
        run.finish(int(exitstatus), int(session.exitstatus))
    # Before pytest-html renders (its sessionfinish is trylast): the charts include this run.
    path = config.stash.get(HISTORY_PATH_KEY, None)
    settings = config.stash.get(SETTINGS_KEY, None)
    if path is not None and settings is not None and not hasattr(config, "workerinput"):
        run = config.stash[SUMMARY_KEY]
        try:
            history.append(path, report.history_records(run, config.stash.get(RUN_FACTS_KEY, {}),
                                                        [t.name for t in settings.targets]))
        except OSError as e:
            # The checks' verdict stands; losing one history line must not turn into a traceback.
            run.notes.append(f"run history not written to {path} ({e.strerror}); fix the reports directory")
    if settings is not None and SUMMARY_KEY in config.stash and not hasattr(config, "workerinput"):
        run = config.stash[SUMMARY_KEY]
        for t in settings.targets:
            for fields in config.hook.pytest_pgbackup_verify_report_fields(config=config, target=t):
                run.fields.setdefault(t.name, []).extend((str(k), str(v)) for k, v in fields)
        report.add_html_environment(config, settings, config.stash.get(RUN_FACTS_KEY, {}), run.fields)
        run.facts = {t: history.numeric_facts(f) for t, f in config.stash.get(RUN_FACTS_KEY, {}).items()}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist controller: merge a worker's run facts into this run's."""
    data = getattr(node, "workeroutput", {}).get("pgbackup_verify")
    config: pytest.Config = node.config  # type: ignore[attr-defined]
    if not data or RUN_FACTS_KEY not in config.stash:
        return
    for target, facts in data["facts"].items():
        config.stash[RUN_FACTS_KEY].setdefault(target, {}).update(facts)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    run = config.stash.get(SUMMARY_KEY, None)
    if config.option.collectonly:
        run = None  # nothing was judged: no verdict lines (the checks would all read `not run`)
    if run is not None and not hasattr(config, "workerinput"):
        # What pytest's -r does not list already, named by check (-r would name a path; the CLI passes -rN).
        for line in check_lines(run.fold, terminalreporter.reportchars):
            terminalreporter.write_line(printable(line))
    for line in summary_lines(run.fold) if run is not None else []:
        terminalreporter.write_line(printable(line))
    for name, values in config.stash.get(RUN_FACTS_KEY, {}).items():
        if values:
            terminalreporter.write_line(printable(f"pgbackup-verify {name}: {figures_line(values)}"))
    settings = config.stash.get(SETTINGS_KEY, None)
    if run is not None and settings and settings.targets and not hasattr(config, "workerinput"):
        latest = settings.reports_dir / "latest.html" if settings.reports_dir else None
        for note in run.notes:  # a Kuma push failure quotes Kuma's answer
            terminalreporter.write_line(printable(f"pgbackup-verify: {note}"))
        terminalreporter.write_line(printable(run.line(str(latest) if latest else None)))


def pytest_unconfigure(config: pytest.Config) -> None:
    SigTermInterrupts.uninstall()
    if hasattr(config, "workerinput"):
        return
    if not config.stash.get(SESSION_KEY, False):
        report.replace_latest_unchecked(config)
        return
    settings = config.stash.get(SETTINGS_KEY, None)
    run = config.stash.get(SUMMARY_KEY, None)
    if not settings or run is None:
        return
    json_path = config.stash.get(JSON_PATH_KEY, None)
    for path in (json_path, config.getoption("pgbv_json")):
        if path:
            write_json(run, os.fspath(path))
    if settings.reports_dir:
        report.publish_latest(config, settings.reports_dir, json_path, settings.reports_gid)
        report.rotate(settings.reports_dir, settings.keep_reports)


# Default fixture instances (factories live in pgbackup_verify.fixtures).
target = factories.target()
evidence = factories.evidence()
run_facts = factories.run_facts()
run_history = factories.run_history()
sql_check_results = factories.sql_check_results()
dump_scan_cache = factories.dump_scan_cache()
backup_inventory = factories.backup_inventory()
latest_dump = factories.latest_dump()
previous_good_dump = factories.previous_good_dump()
night_coverage = factories.night_coverage()
good_dumps = factories.good_dumps()
custom_dump_toc = factories.custom_dump_toc()
catalog_audit = factories.catalog_audit()
grant_audit = factories.grant_audit()
drill = factories.drill()
backup_host = factories.backup_host()
host_section = factories.host_section()
backup_dir_facts = factories.backup_dir_facts()
crontabs = factories.crontabs()
backup_scripts = factories.backup_scripts()
offsite_section = factories.offsite_section()
offsite_listing = factories.offsite_listing()
offsite_record = factories.offsite_record()
offsite_scan = factories.offsite_scan()
kuma_facts = factories.kuma_facts()
