"""Where reports go: a timestamped HTML + JUnit pair under reports/, and stable `latest.*` copies."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from pgbackup_verify.evidence import EVIDENCE_KEY


def plan_reports(config: pytest.Config, reports_dir: Path) -> Path:
    """Point pytest-html and junitxml at reports/ unless the user chose paths already."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    if config.pluginmanager.hasplugin("html") and not config.option.htmlpath:
        config.option.htmlpath = str(reports_dir / f"pgbackup-verify-{stamp}.html")
        config.option.self_contained_html = True
    if not config.option.xmlpath:
        config.option.xmlpath = str(reports_dir / f"pgbackup-verify-{stamp}.xml")
    return reports_dir / f"pgbackup-verify-{stamp}.json"


def publish_latest(config: pytest.Config, reports_dir: Path, json_path: Path | None) -> None:
    """Copy this run's reports to latest.html / latest.xml (a stable name to bookmark)."""
    for path, name in ((getattr(config.option, "htmlpath", None), "latest.html"), (config.option.xmlpath, "latest.xml"),
                       (json_path, "latest.json")):
        if path and Path(path).is_file():
            shutil.copyfile(path, reports_dir / name)


def add_html_environment(config: pytest.Config, settings: object, facts: dict[str, dict[str, str]]) -> None:
    """Header facts (target file, host, dump role, server version) into pytest-html's environment table."""
    if settings is None or not config.pluginmanager.hasplugin("html"):
        return
    from pytest_metadata.plugin import metadata_key

    meta = config.stash.get(metadata_key, None)
    if meta is None:
        return
    for t in settings.targets:  # type: ignore[attr-defined]
        meta[f"target {t.name}"] = f"{t.source} (host {t.host}, dump role {t.database.dump_role})"
    for name, values in facts.items():
        for k, v in values.items():
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
        report.extras = extras
