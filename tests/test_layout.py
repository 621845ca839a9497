"""The architecture holds: rooms by concern, library code without pytest, one outcome fold, no demo
code in the shipped package. Read from the sources (AST), so a regression fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pgbackup_verify

PACKAGE = Path(pgbackup_verify.__file__).resolve().parent
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "checks" not in p.relative_to(PACKAGE).parts[:1]
                 and "fixtures" not in p.relative_to(PACKAGE).parts[:1])
# Attributes of pytest's reports that carry an outcome: only the fold reads them.
OUTCOME_ATTRS = {"outcome", "passed", "failed", "skipped", "wasxfail"}
REPORT_NAMES = {"rep", "report", "r_report", "phase_report"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_package_root_holds_about_a_dozen_modules() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 13, root
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")} >= {
        "config", "facts", "report", "kuma", "checks", "fixtures"}


def test_library_code_imports_no_pytest() -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p in SOURCES
                 if p.relative_to(PACKAGE).parts[0] in ("facts", "config") and p.name != "settings.py"
                 and any(m == "pytest" or m.startswith(("pytest.", "_pytest")) for m in imports(p))]
    assert offenders == []


def test_nothing_shipped_imports_the_demo() -> None:
    everything = [*SOURCES, *(PACKAGE / "checks").glob("*.py"), *(PACKAGE / "fixtures").glob("*.py")]
    offenders = [str(p) for p in everything if any(m.startswith("pgbackup_verify_demo") for m in imports(p))]
    assert offenders == []


def test_only_the_outcome_fold_reads_what_pytest_reported() -> None:
    offenders = []
    for p in SOURCES:
        if p.name == "outcome.py":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in OUTCOME_ATTRS
                    and isinstance(node.value, ast.Name) and node.value.id in REPORT_NAMES):
                offenders.append(f"{p.relative_to(PACKAGE)}:{node.lineno} {node.value.id}.{node.attr}")
    assert offenders == []
