"""The fleet page over 200 hosts, opened in a real headless Chromium. The reports are real: one checks run
of the demo database as a healthy target, as the seed's night (a 20-byte empty gzip as the newest dump) and
as a target file with a typo (set aside, the other two still checked), and one run refused for a broken
target file; each of the 200 hosts gets a copy of one of them under its own name (some three days old:
STALE), plus one file that is not a report at all (UNREADABLE). The three-target run's own report is also
a fleet of its own: one run over many hosts (`--target DIR`), one row per host."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkrun import pytester_env
from demohost import built_demo
from playwright.sync_api import Browser
from test_metrics_prometheus import broken_backups
from test_report_browser import browser  # noqa: F401 - its Chromium, a module fixture here too

ARTIFACT = Path(__file__).resolve().parent.parent / "reports" / "fleet-200-hosts.png"
HOSTS = 200
HOSTILE = '<img src=x onerror="window.pwned=1">db'


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", *args], cwd=cwd, env=pytester_env(cwd),
                          capture_output=True, text=True, timeout=600, check=False)


def one_target(doc: dict, target: str, name: str, age_hours: float = 0.0) -> dict:
    """A real report cut down to one target, renamed, and made `age_hours` older."""
    out = copy.deepcopy(doc)
    out["checks"] = [dict(c, target=name) for c in doc["checks"] if c["target"] == target]
    out["concerns"] = [dict(c, target=name) for c in doc["concerns"] if c["target"] == target]
    out["targets"] = [dict(t, name=name) for t in doc["targets"] if t["name"] == target]
    out["facts"] = {name: doc["facts"].get(target, {})}
    out["status"] = out["targets"][0]["status"] if out["targets"] else out["status"]
    started = time.mktime(time.strptime(doc["started"][:19], "%Y-%m-%dT%H:%M:%S")) - age_hours * 3600
    out["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))
    return out


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The reports directory of one real run over three hosts: healthy, the seed's night, a typo."""
    for d in built_demo(tmp_path_factory, "fleet-demo"):
        broken = d.target_file.with_name("broken.toml")
        text = d.target_file.read_text().replace('name = "demo"', 'name = "broken"')
        broken.write_text(text.replace(str(d.workdir / "backups"), str(broken_backups(d))))
        typo = d.target_file.with_name("typo.toml")
        typo.write_text(text.replace('name = "broken"', 'name = "typo"').replace("max_age_hours", "max_age_hour"))
        run = cli(d.workdir, f"--target={d.target_file}", f"--target={broken}", f"--target={typo}",
                  "--reports-dir=reports")
        assert run.returncode == 1, run.stdout[-3000:]
        yield d.workdir / "reports"


@pytest.fixture(scope="module")
def fleet_dir(one_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    real = json.loads((one_run / "latest.json").read_text())
    html = one_run / "latest.html"
    refused = one_run.parent / "refused"
    refused.mkdir()
    (refused / "bad.toml").write_text("[database]\n")
    assert cli(refused, "--target=bad.toml", "--reports-dir=reports").returncode == 4
    fleet = tmp_path_factory.mktemp("fleet")
    for i in range(HOSTS):
        host = fleet / f"host-{i:03d}"
        host.mkdir()
        if i == 7:
            shutil.copy(refused / "reports" / "latest.json", host / "latest.json")
            shutil.copy(refused / "reports" / "latest.html", host / "latest.html")
            continue
        if i == 13:
            (host / "latest.json").write_text('{"status": "OK", "checks": [')  # cut off mid-write
            continue
        name = HOSTILE if i == 42 else f"db-{i:03d}"
        doc = one_target(real, "broken" if i % 50 == 3 else "demo", name, age_hours=72 if i % 40 == 9 else 0)
        (host / "latest.json").write_text(json.dumps(doc))
        shutil.copy(html, host / "latest.html")
    return fleet


def test_the_fleet_page_shows_200_hosts_worst_first_in_chromium(fleet_dir: Path, browser: Browser,  # noqa: F811
                                                                tmp_path: Path):
    out = tmp_path / "fleet.html"
    made = cli(tmp_path, "fleet", str(fleet_dir), "-o", str(out))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"pgbackup-verify fleet: {HOSTS} hosts, 11 not OK: {out}"
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(out.as_uri())
    assert page.locator("#summary").inner_text().startswith(f"11 of {HOSTS} hosts not OK")
    rows = page.locator("tr.host")
    assert rows.count() == HOSTS
    statuses = [s for s in page.locator("tr.host td.status").all_inner_texts()]
    # Worst first: what needs a person (4 seed nights, a refused run, an unreadable report), then the
    # 5 STALE hosts, then the 189 OK ones.
    assert sorted(statuses[:6]) == ["FAILED"] * 4 + ["NOT CHECKED", "UNREADABLE"]
    assert statuses[6:11] == ["STALE"] * 5 and set(statuses[11:]) == {"OK"}
    header = page.locator("#fleet thead th").all_inner_texts()
    assert header[:5] == ["host", "status", "grants", "dumps", "drill"]
    seed = page.locator("tr.host", has=page.locator("td.name", has_text="db-003"))
    cells = dict(zip(header, seed.locator("td").all_inner_texts(), strict=True))
    assert cells["dumps"] == "FAILED" and cells["grants"] == "OK"
    assert cells["why"].startswith("latest dump payload reaches minimum: latest dump payload: FAILED (")
    # The 20-byte file is the newest dump; the newest good one is the night before's (1 h old at the run).
    hours, unit, note = cells["newest good dump"].split(" ", 2)
    assert 1.0 <= float(hours) < 1.5 and (unit, note) == ("h", "(dumps failing)")
    healthy = dict(zip(header, page.locator("tr.host", has=page.locator("td.name", has_text="db-000"))
                       .locator("td").all_inner_texts(), strict=True))
    assert healthy["status"] == "OK" and healthy["last drill"].endswith(" s, full, OK") and healthy["why"] == ""
    assert healthy["newest good dump"].endswith(" h") and healthy["checked"].endswith(" h ago")
    stale = dict(zip(header, page.locator("tr.host", has=page.locator("td.name", has_text="db-009"))
                     .locator("td").all_inner_texts(), strict=True))
    assert (stale["status"], stale["checked"]) == ("STALE", "3.0 d ago")
    assert stale["why"] == "last report 72 h old, over 26 h"
    refused = page.locator("tr.host[data-status='NOT CHECKED'] td")
    assert refused.nth(0).inner_text() == "host-007"
    assert refused.last.inner_text().startswith("config error: target file 'bad.toml': [database]")
    unreadable = page.locator("tr.host[data-status='UNREADABLE'] td.why").inner_text()
    assert "host-013" in unreadable and "cannot be read" in unreadable
    # A host name from a report is text, never markup.
    assert page.locator("td.name", has_text=HOSTILE).count() == 1
    assert page.evaluate("window.pwned === undefined")
    # Each row links to that host's own report.
    href = seed.locator("a").get_attribute("href")
    assert (out.parent / href).resolve() == (fleet_dir / "host-003" / "latest.html").resolve()
    seed.locator("a").click()
    page.wait_for_load_state()
    assert page.url.split("?")[0].endswith("host-003/latest.html")  # pytest-html adds its sort order
    assert page.locator("#pgbv-summary").inner_text() == "Backup health: FAILED"
    assert all(u.startswith(("file:", "data:", "about:")) for u in fetched), fetched
    page.goto(out.as_uri())
    ARTIFACT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACT), full_page=False)
    assert ARTIFACT.stat().st_size > 10_000


def test_one_run_over_many_hosts_gives_each_host_its_row_and_names_the_one_that_failed(
        one_run: Path, browser: Browser, tmp_path: Path):  # noqa: F811
    """One run over a directory of target files is a fleet too: a host whose dumps fail and a host whose
    file has a typo are rows of their own, each saying why, and the healthy host stays OK beside them."""
    out = tmp_path / "fleet.html"
    made = cli(tmp_path, "fleet", str(one_run), "-o", str(out))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"pgbackup-verify fleet: 3 hosts, 2 not OK: {out}"
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(out.as_uri())
    assert page.locator("#summary").inner_text().startswith("2 of 3 hosts not OK")
    header = page.locator("#fleet thead th").all_inner_texts()
    rows = {cells[0]: dict(zip(header, cells, strict=True))
            for cells in (r.locator("td").all_inner_texts() for r in page.locator("tr.host").all())}
    assert list(rows) == ["broken", "typo", "demo"]  # worst first, then by name
    assert rows["demo"]["status"] == "OK" and rows["demo"]["why"] == ""
    assert rows["demo"]["last drill"].endswith(" s, full, OK")
    assert (rows["broken"]["status"], rows["broken"]["dumps"], rows["broken"]["grants"]) == ("FAILED", "FAILED", "OK")
    assert rows["broken"]["why"].startswith("latest dump payload reaches minimum: latest dump payload: FAILED (")
    # The typo: nothing of that host was checked; its row names the file, the key and the fix.
    typo = rows["typo"]
    assert typo["status"] == "FAILED" and (typo["dumps"], typo["drill"], typo["last drill"]) == ("", "", "")
    assert typo["why"].startswith("target file is valid: ConfigError: target file ") and "typo.toml" in typo["why"]
    assert "max_age_hour" in typo["why"], typo["why"]
    # All three rows link to the one run's report.
    links = {a.get_attribute("href") for a in page.locator("tr.host a").all()}
    assert {(out.parent / h).resolve() for h in links if h} == {(one_run / "latest.html").resolve()}


@pytest.mark.parametrize(("make", "said"), [
    (lambda p: p / "nowhere", "does not exist"),
    (lambda p: p, "no JSON report under"),
])
def test_the_fleet_command_names_what_is_wrong_in_one_line(tmp_path, make, said):
    made = cli(tmp_path, "fleet", str(make(tmp_path)), "-o", str(tmp_path / "f.html"))
    assert made.returncode == 4 and said in made.stderr and len(made.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "f.html").exists()
