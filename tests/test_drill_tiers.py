"""Tiered drills (facts/drill/tiers.py) and drill progress (facts/drill/progress.py).

One cluster for the module: a source database whose tables differ in size, with a foreign key from
the largest table to another one; real plain (gzip) and custom-format dumps of it are restored by
real drills in scratch mode on the same cluster, and the restored databases are counted.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
from srcdb import source_database

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.config import ConfigError, DrillSection, load_target
from pgbackup_verify.facts.drill import tiers
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.drillcluster import Endpoint
from pgbackup_verify.facts.drill.progress import DrillProgress, for_stream
from pgbackup_verify.facts.drill.restore import restore_custom, restore_plain
from pgbackup_verify.facts.drill.run import run_drill
from pgbackup_verify.facts.drill.safety import Janitor
from pgbackup_verify.facts.dumps.plainscan import split_name
from pgbackup_verify.facts.dumps.source import from_path
from pgbackup_verify.facts.history import DRILL_FULL_PASSED, DRILL_TIER, History, RunRecord

SOURCE = r"""
CREATE SCHEMA "Odd Schema";
CREATE TABLE public.parent (id int PRIMARY KEY, name text);
CREATE TABLE public.child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES public.parent(id), v text);
CREATE TABLE public.small (id int PRIMARY KEY);
CREATE TABLE public.mid (id int PRIMARY KEY, t text);
CREATE TABLE "Odd Schema"."T x" (id int, "the value" text);
CREATE SEQUENCE public.counter;
SELECT setval('public.counter', 77);
CREATE VIEW public.child_view AS SELECT id, v FROM public.child;
INSERT INTO public.parent SELECT g, 'p' || g FROM generate_series(1, 300) g;
INSERT INTO public.child SELECT g, 1 + g % 300, repeat('v', 200) FROM generate_series(1, 4000) g;
INSERT INTO public.small SELECT generate_series(1, 10);
INSERT INTO public.mid SELECT g, repeat('m', 50) FROM generate_series(1, 800) g;
INSERT INTO "Odd Schema"."T x" SELECT g, 'x;y' FROM generate_series(1, 50) g;
"""
ROWS = {"public.parent": 300, "public.child": 4000, "public.small": 10, "public.mid": 800, "Odd Schema.T x": 50}
CHECK = str(checks_dir() / "test_drill.py")
WEEKDAY = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TODAY = WEEKDAY[date.today().weekday()]
OTHER_DAY = WEEKDAY[(date.today().weekday() + 3) % 7]


COUNT = ("SELECT format('%s.%s', n.nspname, c.relname), "
         "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), "
         "false, true, '')))[1]::text::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
         "WHERE c.relkind = 'r' AND n.nspname IN ('public', 'Odd Schema')")


class Scene:
    def __init__(self, cluster: ThrowawayCluster, root: Path) -> None:
        self.cluster, self.root, self.n = cluster, root, 0
        env = cluster.env()
        self.role = str(psycopg.conninfo.conninfo_to_dict(cluster.dsn()).get("user", "postgres"))
        self.dirs = {"plain": root / "plain", "custom": root / "custom"}
        for d in self.dirs.values():
            d.mkdir()
        text = subprocess.run(["pg_dump", "--no-owner", "--no-acl", "-d", "src"], env=env, capture_output=True,
                              check=True).stdout
        self.plain_text = text
        self.dumps = {"plain": self.dirs["plain"] / "src_1.sql.gz", "custom": self.dirs["custom"] / "src_1.dump"}
        self.dumps["plain"].write_bytes(gzip.compress(text))
        subprocess.run(["pg_dump", "-Fc", "--no-owner", "--no-acl", "-d", "src", "-f", str(self.dumps["custom"])],
                       env=env, check=True)

    def work(self) -> Path:
        self.n += 1
        work = self.root / f"work{self.n}"
        work.mkdir()
        work.chmod(0o711)
        return work

    def target(self, kind: str, backup_dir: Path | None = None, extra: str = "", **drill: object) -> Path:
        work = self.work()
        pattern = "src_*.sql.gz" if kind == "plain" else "src_*.dump"
        keys = {"mode": "scratch", "server_dsn": self.cluster.dsn(), "allow_superuser_restore": True,
                "work_dir": str(work),
                "lock_file": str(work / "drill.lock"), "expected_schemas": ["public", "Odd Schema"], **drill}
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
        path = self.root / f"t{self.n}.toml"
        path.write_text(f'[target]\nname = "t{self.n}"\n[database]\ndsn = "{self.cluster.dsn("src")}"\n'
                        f'dump_role = "{self.role}"\n'
                        f'[backups]\ndirectory = "{backup_dir or self.dirs[kind]}"\npattern = "{pattern}"\n'
                        f"[drill]\n{lines}\n{extra}")
        return path

    def restore(self, kind: str, plan: tiers.TierPlan, jobs: int = 2, dump: Path | None = None
                ) -> tuple[list[str], dict[str, int] | None, dict[str, int]]:
        """Restore one dump for `plan` into a fresh database: (problems, row facts, counts restored)."""
        self.n += 1
        name = f"restore_{self.n}"
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")  # type: ignore[arg-type]
        dsn, work, janitor = self.cluster.dsn(name), self.work(), Janitor()
        source = from_path(dump or self.dumps[kind])
        try:
            if kind == "custom":
                out = restore_custom(source, Endpoint(dsn), jobs, 120, janitor, work, None,
                                     plan.pg_restore_args(source, janitor, work))
            else:
                out = restore_plain(source, Endpoint(dsn), 120, janitor, None, jobs, work, plan.copy_filter)
        finally:
            assert janitor.run_all() == []
        with psycopg.connect(dsn) as conn:
            counts = dict(conn.execute(COUNT).fetchall())  # type: ignore[arg-type]
        assert not list(work.iterdir()), "the restore list / spool must be gone"
        return out.problems, out.rows, counts


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    with source_database("tiers-", SOURCE, analyze=True) as (c, root):
        yield Scene(c, root)


def _named(rows: dict[str, int]) -> dict[str, int]:
    """The scanner's COPY targets as written (quoted) -> `schema.table`, unquoted."""
    return {".".join(split_name(t)): n for t, n in rows.items()}


def _section(**keys: object) -> DrillSection:
    return DrillSection(**keys)  # type: ignore[arg-type]


def _sample_plan(scene: Scene, today: date | None = None, **keys: object) -> tiers.TierPlan:
    target = load_target(scene.target("plain", tier="sample", **keys))
    assert target.drill is not None
    return tiers.plan(target, target.drill, today)


# -- each tier on a real dump ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["plain", "custom"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_schema_tier_restores_every_object_and_no_row(scene, kind, jobs):
    plan = tiers.TierPlan(tiers.SCHEMA, "schema")
    problems, rows, counts = scene.restore(kind, plan, jobs)
    assert problems == []
    assert counts == dict.fromkeys(ROWS, 0)  # every table there, every one empty
    # The data was still read and counted (the row check asks that every such table exists), never loaded.
    assert (_named(rows) if rows is not None else None) == (ROWS if kind == "plain" else None)


def test_schema_tier_still_scans_the_data_and_refuses_a_meta_command(scene, tmp_path):
    """Skipped COPY data is read with the same scan: a meta-command after it is refused, never run."""
    marker = tmp_path / "pwned"
    text = scene.plain_text.replace(b"COPY public.small ", f"\\! touch {marker}\nCOPY public.small ".encode(), 1)
    dump = tmp_path / "src_2.sql.gz"
    dump.write_bytes(gzip.compress(text))
    problems, _, _ = scene.restore("plain", tiers.TierPlan(tiers.SCHEMA, "schema"), dump=dump)
    assert problems and "meta-command" in problems[0] and not marker.exists()


@pytest.mark.parametrize("kind", ["plain", "custom"])
def test_sample_tier_loads_the_largest_tables_and_what_their_keys_reference(scene, kind):
    plan = _sample_plan(scene, sample_tables=1)
    assert plan.picked == ("public.child",) and plan.referenced == ("public.parent",)
    problems, rows, counts = scene.restore(kind, plan)
    assert problems == []
    assert counts == {**dict.fromkeys(ROWS, 0), "public.child": 4000, "public.parent": 300}
    if kind == "plain":
        assert _named(rows) == ROWS  # what the dump holds; the row check compares the loaded ones
    assert plan.sampled() == "1 tables (public.child) + 1 their foreign keys reference (public.parent)"
    assert plan.describe() == "sample (no full drill scheduled: [drill].full_on is empty), largest"


def test_sample_tier_of_a_custom_dump_without_a_file_lists_it_from_the_stream(scene):
    """An offsite member has no path: its table of contents is read from the stream (pg_restore -l)."""
    plan = _sample_plan(scene, sample_tables=1)
    stream = dataclasses.replace(from_path(scene.dumps["custom"]), path=None)
    janitor, work = Janitor(), scene.work()
    args = plan.pg_restore_args(stream, janitor, work)
    listing = Path(args[1]).read_text()
    assert args[0] == "-L" and janitor.run_all() == [] and not list(work.iterdir())
    data = [line for line in listing.splitlines() if " TABLE DATA " in line]
    assert sorted(line.split(" TABLE DATA ")[1].rsplit(" ", 1)[0] for line in data if not line.startswith(";")) \
        == ["public child", "public parent"]
    assert len(data) == len(ROWS)


def test_sample_rotation_covers_every_table_in_turn(scene):
    seen: list[tuple[str, ...]] = []
    for ahead in range(3):
        plan = _sample_plan(scene, date(2026, 1, 5) + timedelta(days=ahead), sample_tables=2, sample_pick="rotate")
        seen.append(plan.picked)
    assert len({t for picked in seen for t in picked}) == len(ROWS)  # 5 tables, 2 a day: all in 3 days
    assert seen[0] != seen[1]
    plan = _sample_plan(scene, date(2026, 1, 5), sample_tables=2, sample_pick="rotate")
    assert plan.picked == seen[0]  # the same day picks the same tables


def test_sample_tier_of_a_quoted_table_loads_it(scene):
    plan = tiers.TierPlan(tiers.SAMPLE, "sample", ("Odd Schema.T x",), (), frozenset({("Odd Schema", "T x")}))
    for kind in ("plain", "custom"):
        problems, _, counts = scene.restore(kind, plan)
        assert problems == [] and counts["Odd Schema.T x"] == 50 and counts["public.child"] == 0, kind


def test_full_drill_and_schema_drill_record_their_tier(scene):
    full = run_drill(load_target(scene.target("plain")))
    assert full.tier is not None and full.tier.tier == tiers.FULL and full.tier.describe() == "full"
    assert _named({t: n for t, (n, _) in full.rows.items()}) == ROWS and full.outcome.problems == []
    facts = run_drill(load_target(scene.target("custom", tier="schema", full_on=OTHER_DAY)))
    assert facts.aborted is None and facts.outcome.problems == [] and facts.restored.table_count() == 5
    assert facts.tier.describe() == f"schema (full on {OTHER_DAY})"
    due = run_drill(load_target(scene.target("plain", tier="schema", full_on=[TODAY, OTHER_DAY])))
    assert due.tier.tier == tiers.FULL and len(due.rows) == 5  # the scheduled day: full, whatever tier says


# -- the schedule and the keys ---------------------------------------------------------------------------

def test_full_on_names_the_days_the_drill_is_full():
    d = _section(tier="sample", full_on="Sunday")
    sunday = date(2026, 12, 6)
    assert tiers.tier_on(d, sunday) == tiers.FULL and tiers.tier_on(d, sunday + timedelta(days=1)) == "sample"
    assert tiers.schedule_note(d, "sample") == "sample (full on sunday)"
    assert tiers.schedule_note(d, tiers.FULL) == "full (scheduled on sunday; sample on other days)"
    assert tiers.next_full_day(d, sunday + timedelta(days=1)) == "sunday"
    d2 = _section(tier="schema", full_on=("sunday", "wednesday"))
    assert tiers.schedule_note(d2, "schema") == "schema (full on wednesday and sunday)"
    assert tiers.tier_on(_section(), sunday) == tiers.FULL  # the default: full every day
    assert "no full drill scheduled" in tiers.schedule_note(_section(tier="schema"), "schema")


def _config(tmp_path: Path, line: str) -> str:
    return (f'[database]\ndsn = "dbname=x"\ndump_role = "x"\n[backups]\ndirectory = "{tmp_path / "b"}"\n'
            f"[drill]\n{line}\n")


@pytest.mark.parametrize(("line", "key"), [
    ('tier = "tiny"', "[drill].tier"),
    ('sample_pick = "random"', "[drill].sample_pick"),
    ('full_on = ["sunday", "sundae"]', "[drill].full_on"),
    ("full_on = 7", "[drill].full_on"),
    ("max_full_age_days = 0", "[drill].max_full_age_days"),
    ("sample_tables = 0", "[drill].sample_tables"),
])
def test_tier_keys_with_bad_values_name_the_key(tmp_path, line, key):
    (tmp_path / "b").mkdir()
    f = tmp_path / "t.toml"
    f.write_text(_config(tmp_path, line))
    with pytest.raises(ConfigError, match=re.escape(f"t.toml': {key}: ")):
        load_target(f)


def test_full_on_takes_one_day_or_a_list(tmp_path):
    (tmp_path / "b").mkdir()
    for line, want in [('full_on = "sunday"', "sunday"), ('full_on = ["monday", "sunday"]', ("monday", "sunday"))]:
        f = tmp_path / "t.toml"
        f.write_text(_config(tmp_path, line))
        d = load_target(f).drill
        assert d is not None and d.full_on == want


# -- the age of the last passing full drill ------------------------------------------------------------

def _record(days_ago: float, tier: int, passed: bool, target: str = "t") -> RunRecord:
    facts = {DRILL_TIER: float(tier), **({DRILL_FULL_PASSED: 1.0} if passed else {})}
    return RunRecord(time.time() - days_ago * 86400, target, "OK", {"passed": 7}, [], facts)


def test_full_age_reads_the_last_passing_full_drill_from_the_history():
    now = time.time()
    h = History([_record(12, 2, True), _record(5, 2, False), _record(1, 0, False), _record(0.5, 2, True, "other")])
    age = tiers.full_age(h, "t", False, now)
    assert round(age.days or 0) == 12 and "12.0 days ago" in (age.problem(8, False) or "")
    assert age.problem(14, False) is None
    assert tiers.full_age(h, "t", True, now).problem(8, True) is None  # today's full drill passed
    new = tiers.full_age(History([]), "t", False, now)
    assert new.problem(8, ran_full_today=True) is None  # first run, full today: judged by the other checks
    assert new.problem(8, ran_full_today=False) == "no full drill has ever passed"
    never = tiers.full_age(History([_record(1, 0, False)]), "t", False, now)
    assert never.problem(8, ran_full_today=True) == "no full drill has ever passed"


def _run_checks(pytester: pytest.Pytester, target: Path, reports: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--target", str(target), "--reports-dir", str(reports), "-p",
                                         "no:cacheprovider", "-rA", *args, CHECK)


KUMA = ('[kuma]\nurl = "http://127.0.0.1:9"\n[[kuma.push]]\nmonitor = "Local"\ntoken_env = "KUMA_PUSH_LOCAL"\n'
        'covers = ["drill"]\n')


def test_schema_drill_with_an_old_full_drill_fails_naming_the_age_and_the_fix(scene, pytester, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("KUMA_PUSH_LOCAL", "tok")
    target = scene.target("plain", extra=KUMA, tier="schema", full_on=OTHER_DAY, max_full_age_days=8)
    name = f"t{scene.n}"
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "history.jsonl").write_text(_record(10, 2, True, name).to_line() + _record(1, 0, False, name).to_line())
    result = _run_checks(pytester, target, reports, "--kuma-dry-run")
    out = result.stdout.str()
    # The Kuma message says which tier ran.
    assert re.search(r"msg='FAILED drill: restore drill full age: [^']*, drill tier schema \(full on "
                     + OTHER_DAY + r"\)'", out), out[-3000:]
    result.assert_outcomes(passed=6, failed=1, skipped=1)
    assert "SKIPPED" in out and tiers.NO_DATA in out
    assert f"tier: schema (full on {OTHER_DAY})" in out
    assert "restore drill full age: FAILED (last passing full drill 10.0 days ago" in out and "vs max 8)" in out
    assert (f"fix: run a full drill (pgbackup-verify --target {target} -m drill with [drill].tier = \"full\") "
            f"or wait for {OTHER_DAY}") in out
    # This run's line records the schema tier and no passing full drill.
    last = json.loads((reports / "history.jsonl").read_text().splitlines()[-1])
    assert last["facts"][DRILL_TIER] == 0 and DRILL_FULL_PASSED not in last["facts"]


def test_schema_drill_fails_when_a_table_the_dump_holds_data_for_is_missing(scene, pytester, tmp_path):
    """No data is loaded, but every COPY block the scan read must have its table after the restore."""
    start = scene.plain_text.index(b'CREATE TABLE "Odd Schema"."T x"')
    end = scene.plain_text.index(b");\n", start) + 3
    broken = tmp_path / "dumps"
    broken.mkdir()
    (broken / "src_1.sql.gz").write_bytes(gzip.compress(scene.plain_text[:start] + scene.plain_text[end:]))
    target = scene.target("plain", backup_dir=broken, tier="schema")
    reports = tmp_path / "reports"
    reports.mkdir()
    result = _run_checks(pytester, target, reports, "-k", "rows")
    result.assert_outcomes(failed=1)
    assert ('restore drill row fidelity: FAILED ("Odd Schema"."T x": table missing restored vs 50 in the dump); '
            "fix: repair the dump job so that its output restores" in result.stdout.str())


def test_first_run_passes_only_with_a_full_drill_today(scene, pytester, tmp_path):
    for tier, want in [("full", "passed"), ("sample", "failed")]:
        target = scene.target("plain", tier=tier, sample_tables=1)
        reports = tmp_path / tier
        reports.mkdir()
        result = _run_checks(pytester, target, reports, "-k", "last_full_drill")
        result.assert_outcomes(**{want: 1})
        out = result.stdout.str()
        if tier == "full":
            assert "last passing full drill: today" in out
            last = json.loads((reports / "history.jsonl").read_text().splitlines()[-1])
            assert last["facts"][DRILL_TIER] == 2 and last["facts"][DRILL_FULL_PASSED] == 1
        else:
            assert "(no full drill has ever passed)" in out and "or set [drill].full_on to a weekday" in out
            assert "tier: sample (no full drill scheduled" in out and "sampled tables: 1 tables (public.child)" in out


# -- progress ---------------------------------------------------------------------------------------------

def _feed(p: DrillProgress, seconds: list[float]) -> None:
    for s in seconds:
        p(int(s * 1000), int(s * 10), 1000, s)  # stored read grows 10 bytes a second: done at 100 s
    p.finish()


SCRIPT = """
import sys
from pgbackup_verify.facts.drill.progress import for_stream
p = for_stream("demo", sys.stderr, quiet=sys.argv[1] == "quiet")
p.watch_rows(lambda: 1234567)
for s in [0.5, 5, 9.9, 10, 10.4, 10.9, 11.2, 30, 59, 61, 90, 121.5]:
    p(int(s * 1000), int(s * 5), 1000, s)
p.finish()
sys.stderr.write("END\\n")
"""


def _in_pty(quiet: str) -> str:
    pid, fd = pty.fork()
    if pid == 0:  # the child: stderr is the pty
        os.execv(sys.executable, [sys.executable, "-c", SCRIPT, quiet])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out.decode()


def test_progress_on_a_terminal_is_one_line_rewritten_at_most_every_second():
    out = _in_pty("loud")
    # The terminal turns each "\n" into "\r\n": a new line, the progress line rewritten, then END.
    blank, line, end = out.split("\r\n", 2)
    assert blank == ""
    updates = line.split("\r")[1:]
    # 10, 11.2, 30, 59, 61, 90, 121.5: none before 10 s, none within a second of the last
    assert [u.split(", ")[-2] for u in updates] == ["10s", "11s", "30s", "59s", "1m01s", "1m30s", "2m01s"], out
    assert updates[0].rstrip() == ("restore drill demo: 9.8 KiB of payload, 1,234,567 rows, 5% of the dump read, "
                                   "10s, ETA 3m10s")
    assert end.strip() == "END"


def test_progress_in_cron_is_a_line_a_minute_and_nothing_when_quiet():
    run = subprocess.run([sys.executable, "-c", SCRIPT, "loud"], capture_output=True, text=True, check=True)
    lines = run.stderr.splitlines()
    assert [line.split(", ")[-2] for line in lines[:-1]] == ["1m01s", "2m01s"], run.stderr  # at 61 s and 121.5 s
    assert "\r" not in run.stderr and lines[-1] == "END"
    assert "1,234,567 rows" in lines[0] and "ETA" in lines[0]
    quiet = subprocess.run([sys.executable, "-c", SCRIPT, "quiet"], capture_output=True, text=True, check=True)
    assert quiet.stderr == "END\n"
    quiet_tty = _in_pty("quiet")
    assert quiet_tty.strip() == "END"


def test_progress_of_a_short_drill_says_nothing():
    written: list[str] = []
    _feed(DrillProgress("t", written.append, tty=True), [1, 2, 5, 9.5])
    _feed(DrillProgress("t", written.append, tty=False), [1, 2, 5, 9.5, 40])
    assert written == []
    p = for_stream("t", sys.stderr, quiet=False)
    assert p.tty is sys.stderr.isatty()


def test_a_sampled_table_whose_name_holds_a_newline_is_matched_by_its_dump_id():
    """`pg_restore -l` prints the newline as a space, so its text cannot name the table; the archive's own
    TOC (read by dump id) can: the sampled table's data stays in the list, the other's is commented out."""
    listed = ["3350; 0 16390 TABLE DATA public a b postgres\n", "3351; 0 16391 TABLE DATA public a b c postgres\n"]
    exact = {3350: ("public", "a\nb"), 3351: ("public", "a b c")}
    kept = tiers.restore_list(listed, frozenset({("public", "a\nb")}), exact)
    assert kept == [listed[0], ";" + listed[1]]
    # Without the archive's TOC (a stream) the text is all there is: the newline name is not found.
    assert tiers.restore_list(listed, frozenset({("public", "a\nb")}))[0].startswith(";")
