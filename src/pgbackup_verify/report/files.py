"""Where reports go: a timestamped HTML + JUnit pair under reports/, stable `latest.*` copies, and the
run history (history.jsonl) the trend charts and checks read."""

from __future__ import annotations

import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pgbackup_verify.config import ConfigError
from pgbackup_verify.config.settings import (
    REPORTS_ENV,
    SETTINGS_KEY,
    Settings,
    reports_gid,
    reports_path,
    target_paths,
)
from pgbackup_verify.errors import CONFIG_ERROR, UserError
from pgbackup_verify.evidence import EVIDENCE_KEY
from pgbackup_verify.facts import history, trends
from pgbackup_verify.facts.history import RunRecord, numeric_facts
from pgbackup_verify.outcome import ABORTS, ERROR, FAILED, NOT_RUN
from pgbackup_verify.report import charts
from pgbackup_verify.report.figures import readable_figures
from pgbackup_verify.report.render import render_text
from pgbackup_verify.report.summary import REFUSED_KEY, RunSummary, write_json
from pgbackup_verify.safefs import (
    DIR_MODE,
    UnsafeDirectory,
    atomic_copy,
    atomic_write,
    check_dir_private_enough,
    make_private,
)


def prepare_reports_dir(reports_dir: Path, gid: int | None = None) -> None:
    """Create the reports directory and prove it writable, or raise UserError with the one line to show
    (pytest-html and junitxml would otherwise fail at the end, with a traceback and no report)."""
    try:
        reports_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        check_dir_private_enough(reports_dir, "reports directory")
        make_private(reports_dir, gid)  # one made by an older version (0755, 0644 files) is tightened too
        with tempfile.TemporaryFile(dir=reports_dir):
            pass
    except UnsafeDirectory as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"reports directory '{reports_dir}' cannot be written ({e.strerror}); pass a writable "
                        f"--reports-dir or set {REPORTS_ENV}") from None


def plan_reports(config: pytest.Config, reports_dir: Path, gid: int | None = None) -> Path:
    """Point pytest-html and junitxml at reports/ unless the user chose paths already."""
    try:
        prepare_reports_dir(reports_dir, gid)
    except UserError as e:
        raise pytest.UsageError(str(e)) from None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    if config.pluginmanager.hasplugin("html") and not config.option.htmlpath:
        config.option.htmlpath = str(reports_dir / f"pgbackup-verify-{stamp}.html")
        config.option.self_contained_html = True
    if not config.option.xmlpath:
        config.option.xmlpath = str(reports_dir / f"pgbackup-verify-{stamp}.xml")
    return reports_dir / f"pgbackup-verify-{stamp}.json"


def publish_latest(config: pytest.Config, reports_dir: Path, json_path: Path | None, gid: int | None = None) -> None:
    """Copy this run's reports to latest.html / latest.xml (a stable name to bookmark)."""
    for path, name in ((getattr(config.option, "htmlpath", None), "latest.html"), (config.option.xmlpath, "latest.xml"),
                       (json_path, "latest.json")):
        if path and Path(path).is_file():
            atomic_copy(Path(path), reports_dir / name)  # replaces a planted link, never writes through it
    make_private(reports_dir, gid)  # pytest-html and junitxml created theirs with the process umask


def replace_latest_unchecked(config: pytest.Config) -> None:
    """No session ran (a config or usage error, a crash or Ctrl-C before the checks): replace latest.*
    (and write --json's file) saying so and why; a line on stderr if even that fails."""
    o = config.option
    if getattr(o, "help", False) or getattr(o, "version", False):
        return
    reason, exit_status = config.stash.get(REFUSED_KEY, (ABORTS[CONFIG_ERROR], CONFIG_ERROR))
    settings = config.stash.get(SETTINGS_KEY, None)
    try:
        reports_dir = settings.reports_dir if settings else reports_path(config, bool(target_paths(config)[0]))
    except (ConfigError, ValueError):
        return
    try:
        gid = settings.reports_gid if settings else reports_gid(config)
    except ConfigError:
        gid = None  # the unknown group is what the report names: written for root alone
    json_copy = config.getoption("pgbv_json", None)
    if not reason or (reports_dir is None and not json_copy):
        return
    problem = publish_not_checked(reports_dir, reason, exit_status, Path(json_copy) if json_copy else None, gid)
    if problem:
        print(f"pgbackup-verify: {problem}", file=sys.stderr)


def publish_not_checked(reports_dir: Path | None, reason: str, exit_status: int,
                        json_copy: Path | None = None, gid: int | None = None) -> str | None:
    """Replace latest.{html,json,xml} (and write --json's copy) with a report that says the run checked
    nothing and why (a config error, a crash before the checks, an interrupt), so no earlier run's OK
    is left standing.

    Returns the one line to show when even that cannot be written, else None."""
    run = RunSummary()
    run.fold.refuse(reason)
    run.finish(exit_status, exit_status)
    try:
        if json_copy is not None:
            write_json(run, json_copy)
        if reports_dir is None:
            return None
        prepare_reports_dir(reports_dir, gid)
        atomic_write(reports_dir / "latest.json", run.to_json())
        atomic_write(reports_dir / "latest.html", render_text(
            "not_checked.html.j2", reason=reason, exit_status=exit_status,
            when=time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started))))
        atomic_write(reports_dir / "latest.xml", _junit_not_checked(reason))
        make_private(reports_dir, gid)
    except (UserError, OSError) as e:
        return f"reports not replaced in '{reports_dir or json_copy}' ({getattr(e, 'strerror', None) or e})"
    return None


def _junit_not_checked(reason: str) -> bytes:
    """JUnit XML of a run that did not start: one errored test case, so CI dashboards turn red too."""
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="pgbackup-verify", tests="1", errors="1", failures="0",
                          skipped="0")
    case = ET.SubElement(suite, "testcase", classname="pgbackup-verify", name="run")
    ET.SubElement(case, "error", message=f"NOT CHECKED: {reason}")
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def add_html_environment(config: pytest.Config, settings: object, facts: dict[str, dict[str, object]],
                         fields: dict[str, list[tuple[str, str]]] | None = None) -> None:
    """Header facts (target file, host, dump role, server version, a site's fields) into pytest-html's
    environment table."""
    if settings is None or not config.pluginmanager.hasplugin("html"):
        return
    from pytest_metadata.plugin import metadata_key

    meta = config.stash.get(metadata_key, None)
    if meta is None:
        return
    for t in settings.targets:  # type: ignore[attr-defined]
        meta[f"target {t.name}"] = f"{t.source} (host {t.host}, dump role {t.database.dump_role})"
    for name, values in facts.items():
        for k, v in readable_figures(values):  # `drill tier: full`, not `drill_tier 2`
            meta[f"{name} {k}"] = v
    for name, pairs in (fields or {}).items():
        for k, v in pairs:
            meta[f"{name} {k}"] = v


def rotate(reports_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` runs' timestamped reports; latest.* stay."""
    stamps = sorted({p.name.split(".")[0] for p in reports_dir.glob("pgbackup-verify-*.*")}, reverse=True)
    removed = []
    for stamp in stamps[keep:]:
        for p in reports_dir.glob(f"{stamp}.*"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def attach_evidence(item: pytest.Item, report: pytest.TestReport) -> None:
    """Put a check's evidence in the terminal section, JUnit properties and pytest-html extras."""
    ev = item.stash.get(EVIDENCE_KEY, None)
    if ev is None or not ev.items or report.when != "call":
        return
    report.sections.append(("evidence", ev.text()))
    report.user_properties.extend(ev.items)
    if item.config.pluginmanager.hasplugin("html"):
        import pytest_html

        extras = getattr(report, "extras", [])
        extras.append(pytest_html.extras.html(ev.html()))
        # pytest-html's documented way to attach extras; TestReport itself declares no such attribute.
        setattr(report, "extras", extras)  # noqa: B010


def history_records(run: RunSummary, facts: dict[str, dict[str, object]], targets: list[str]) -> list[RunRecord]:
    """This run's key figures and outcomes, one record per target that ran a check or measured a figure.

    The status is the fold's target verdict: an interrupted or aborted run is FAILED, never OK."""
    records = []
    for name in targets:
        results = run.fold.results(name)
        figures = numeric_facts(facts.get(name, {}))
        if all(r.outcome == NOT_RUN for r in results) and not figures:
            continue  # nothing looked at this target (--collect-only, interrupted before it): no trend point
        records.append(RunRecord(
            time=run.started, target=name, status=run.fold.status(name), outcomes=run.fold.counts(name),
            failed=[r.label or r.name for r in results if r.outcome in (FAILED, ERROR)], facts=figures))
    return records


def trends_section(settings: Settings, history_path: Path | None) -> str:
    """The charts block of the HTML summary, drawn from the history including this run."""
    hist = history.read(history_path) if history_path else history.History([])
    names = [t.name for t in settings.targets]
    budgets = {t.name: trends.settings_for(t).restore_budget_seconds for t in settings.targets}
    return charts.trends_html(hist, names, budgets, settings.keep_reports)
