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


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
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
    if "target" in metafunc.fixturenames and settings and settings.targets:
        metafunc.parametrize("target", settings.targets, ids=[t.name for t in settings.targets],
                             indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings and not settings.targets and any("target" in getattr(i, "fixturenames", ()) for i in items):
        raise pytest.UsageError(
            "no target file: the checks need one; pass --target FILE, set PGBACKUP_VERIFY_TARGET "
            "or the pgbackup_verify_target ini key (see target.example.toml)")


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
kuma_facts = factories.kuma_facts()
