"""pytest plugin: options, hooks and the default fixture instances. The work lives elsewhere."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pgbackup_verify import fixtures as factories
from pgbackup_verify import report
from pgbackup_verify.config import ConfigError
from pgbackup_verify.fixtures.core import RUN_FACTS_KEY
from pgbackup_verify.settings import HELP, Settings, resolve

SETTINGS_KEY = pytest.StashKey[Settings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgbackup-verify")
    group.addoption("--target", action="append", dest="pgbv_target", default=None, help=HELP["target"])
    parser.addini("pgbackup_verify_target", HELP["target"])
    group.addoption("--reports-dir", dest="pgbv_reports", default=None, help=HELP["reports"])
    parser.addini("pgbackup_verify_reports", HELP["reports"])


MARKERS = {
    "grants": "privilege checks of the dump role (Kuma: permission guard)",
    "dumps": "checks of the dump files in the backup directory (Kuma: local backup)",
    "drill": "restore drill of the latest dump",
    "kuma": "Uptime Kuma monitor checks",
    "host": "checks of the backup host (cron, scripts, services)",
    "offsite": "checks of the offsite archive",
    "sql": "custom SQL checks declared in the target file ([[sql_check]])",
}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        settings = resolve(config)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[SETTINGS_KEY] = settings
    config.stash[RUN_FACTS_KEY] = {}
    if settings.reports_dir and not hasattr(config, "workerinput"):
        report.plan_reports(config, settings.reports_dir)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS_KEY, None)
    if not settings or not settings.targets:
        return []
    lines = [f"pgbackup-verify: {len(settings.targets)} target(s) from {settings.target_source}"]
    for t in settings.targets:
        lines.append(f"  {t.name}: file {t.source}, host {t.host}, dump role {t.database.dump_role}, "
                     f"backups {t.backups.directory}/{t.backups.pattern}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash.get(SETTINGS_KEY, None)
    if not settings or not settings.targets or "target" not in metafunc.fixturenames:
        return
    if "sql_check" in metafunc.fixturenames:
        pairs = [(t, c) for t in settings.targets for c in t.sql_check]
        metafunc.parametrize(("target", "sql_check"), pairs, ids=[f"{t.name}-{c.name}" for t, c in pairs],
                             indirect=["target"], scope="session")
        return
    metafunc.parametrize("target", settings.targets, ids=[t.name for t in settings.targets],
                         indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings and not settings.targets and any("target" in getattr(i, "fixturenames", ()) for i in items):
        raise pytest.UsageError(
            "no target file: the checks need one; pass --target FILE, set PGBACKUP_VERIFY_TARGET "
            "or the pgbackup_verify_target ini key (see target.example.toml)")
    for item in items:
        callspec = getattr(item, "callspec", None)
        check = callspec.params.get("sql_check") if callspec else None
        if check is not None and check.concern != "sql":
            # Route a custom check to the same Kuma monitor as the built-in checks of its concern.
            item.add_marker(check.concern)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    rep = yield
    report.attach_evidence(item, rep)  # type: ignore[arg-type]
    return rep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    facts = config.stash.get(RUN_FACTS_KEY, {})
    for name, values in facts.items():
        if values:
            shown = ", ".join(f"{k} {v}" for k, v in values.items())
            terminalreporter.write_line(f"pgbackup-verify {name}: {shown}")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Put the header facts into pytest-html's environment table before it writes the report."""
    config = session.config
    settings = config.stash.get(SETTINGS_KEY, None)
    if not settings or not config.pluginmanager.hasplugin("html"):
        return
    from pytest_metadata.plugin import metadata_key

    meta = config.stash.get(metadata_key, None)
    if meta is None:
        return
    for t in settings.targets:
        meta[f"target {t.name}"] = f"{t.source} (host {t.host}, dump role {t.database.dump_role})"
    for name, values in config.stash.get(RUN_FACTS_KEY, {}).items():
        for k, v in values.items():
            meta[f"{name} {k}"] = v


def pytest_unconfigure(config: pytest.Config) -> None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings and settings.reports_dir and not hasattr(config, "workerinput"):
        report.publish_latest(config, settings.reports_dir)


# Default fixture instances (factories live in pgbackup_verify.fixtures).
target = factories.target()
evidence = factories.evidence()
run_facts = factories.run_facts()
sql_check_results = factories.sql_check_results()
