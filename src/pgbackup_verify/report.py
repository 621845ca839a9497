"""Where reports go: a timestamped HTML + JUnit pair under reports/, and stable `latest.*` copies."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from pgbackup_verify.evidence import EVIDENCE_KEY


def plan_reports(config: pytest.Config, reports_dir: Path) -> None:
    """Point pytest-html and junitxml at reports/ unless the user chose paths already."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    if config.pluginmanager.hasplugin("html") and not config.option.htmlpath:
        config.option.htmlpath = str(reports_dir / f"pgbackup-verify-{stamp}.html")
        config.option.self_contained_html = True
    if not config.option.xmlpath:
        config.option.xmlpath = str(reports_dir / f"pgbackup-verify-{stamp}.xml")


def publish_latest(config: pytest.Config, reports_dir: Path) -> None:
    """Copy this run's reports to latest.html / latest.xml (a stable name to bookmark)."""
    for attr, name in (("htmlpath", "latest.html"), ("xmlpath", "latest.xml")):
        path = getattr(config.option, attr, None)
        if path and Path(path).is_file():
            shutil.copyfile(path, reports_dir / name)


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
        report.extras = extras
