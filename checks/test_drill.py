"""Restore drill: the newest dump really restores, to the schemas and tables expected,
with every row the dump holds, and leaves nothing behind (seed Phase C, section 4)."""

from __future__ import annotations

import time
from datetime import date

import pytest

from pgbackup_verify.config import Target
from pgbackup_verify.evidence import Evidence, fail, human_bytes
from pgbackup_verify.facts.catalog import KINDS
from pgbackup_verify.facts.drill import tiers, traps
from pgbackup_verify.facts.drill.run import DrillFacts, drill_config, expected_schemas
from pgbackup_verify.facts.dumps.plainscan import CLUSTER_DUMP, display_name
from pgbackup_verify.facts.history import History
from pgbackup_verify.ownership import dump_key, restore_key, schemas_key

pytestmark = pytest.mark.drill

READ = "grants.read"  # upstream key of the grants checks (checks/test_grants.py)
FIX_DUMP = "fix: repair the dump job so that its output restores, then re-run the drill"


def _record(evidence: Evidence, f: DrillFacts) -> None:
    evidence("dump used", f"{f.source} ({f.fmt}, {human_bytes(f.stored_bytes or 0)} stored)")
    if f.outcome:
        evidence("payload bytes", f.outcome.payload_bytes)
    evidence("restore db", f"{f.database} on {f.where}" if f.where else f.database or "-")
    if f.isolation:
        evidence("isolation", f.isolation)
    if f.extensions:
        evidence("superuser step", "; ".join(f.extensions))
    if f.restored:
        evidence("tables", f.restored.table_count())
        evidence("schemas", ",".join(sorted(f.restored.schemas)))
    if f.outcome:
        evidence("error lines", "; ".join(f.outcome.problems) or "none")
    evidence("seconds", f"{f.seconds:.1f}")
    _record_tier(evidence, f)


def _ran(f: DrillFacts, evidence: Evidence, owns: str = "") -> DrillFacts:
    """`owns`: the key this check's finding vouches for (ownership.OWNERS): a restore that errored makes
    the later drill checks of it (and the offsite match) not judged; missing schemas the offsite match."""
    if f.skipped:
        pytest.skip(f"restore drill not run: {f.skipped}")
    _record(evidence, f)
    if f.source_path:  # a dump the dump checks found bad: what it restores is not news, their fix is
        evidence.require_upstream(dump_key(f.source_path))
        if owns != restore_key(f.source_path):
            evidence.require_upstream(restore_key(f.source_path))
        if owns:
            evidence.cause(owns)
    if f.aborted:
        fail(f"restore drill: FAILED (did not complete: {f.aborted})")
    assert f.outcome is not None and f.restored is not None
    return f


def test_restore_finished_without_errors(drill: DrillFacts, evidence: Evidence) -> None:
    f = _ran(drill, evidence, owns=restore_key(drill.source_path or ""))
    assert f.outcome is not None
    if f.outcome.warnings:
        evidence("warnings", "; ".join(f.outcome.warnings))
    problems = f.outcome.problems
    if f.cluster is not None:
        _cluster_roles(f, evidence)
    if f.outcome.refused and CLUSTER_DUMP in f.outcome.refused:
        fail(f"restore drill errors: FAILED (dump refused: {f.outcome.refused}); fix: the drill restores a whole "
             "cluster only from a file that starts with pg_dumpall's header ('-- PostgreSQL database cluster "
             "dump'), and one database's pg_dump without -C/--create: take the dump without -C, or point "
             "[backups].pattern at the pg_dumpall file")
    if f.outcome.refused:
        fail(f"restore drill errors: FAILED (dump refused: {f.outcome.refused}); fix: a pg_dump never "
                    "writes meta-commands; find what wrote or edited this dump and take a clean one")
    found = traps.find_traps(problems)
    if found:
        shown = "; ".join(t.describe() for t in found[:5])
        fail(f"restore drill: FAILED ({shown}); {traps.FIX}")
    if problems:
        shown = "\n  ".join(problems[:10])
        fail(f"restore drill errors: FAILED ({len(problems)} error lines vs 0):\n  {shown}\n{FIX_DUMP}")


def _cluster_roles(f: DrillFacts, evidence: Evidence) -> None:
    """A pg_dumpall dump: its databases, and its roles as the drill made them (plain NOLOGIN owner roles)."""
    c = f.cluster
    assert c is not None
    if f.globals_source:
        evidence("globals file", f"{f.globals_source}: its roles made before the restore ([drill].globals_glob)")
    else:
        evidence("databases restored", ", ".join(display_name(db) for db in f.databases) or "none")
    asked = "; ".join(f"{display_name(r)} {' '.join(p)}" for r, p in sorted(c.globals.roles.items()) if p)
    evidence("roles of the dump", f"{len(c.globals.roles)} made plain NOLOGIN owner roles (the drill's catalog: "
                                  "no superuser, login, replication, BYPASSRLS or password)"
             + (f"; asked for by the dump, not given: {asked}" if asked else ""))
    if c.grants or c.not_granted:
        evidence("memberships", "; ".join(c.grants) + ("; not granted: " + "; ".join(c.not_granted)
                                                       if c.not_granted else ""))
    skipped = {**c.globals.not_run, **c.scanner.dropped}
    if skipped:
        evidence("not run", "; ".join(f"{kind}: {n}" for kind, n in sorted(skipped.items())))
    held = {r: p for r, p in c.powers.items() if p}
    if held:  # never expected: the drill made these roles itself; a role of the dump holding a power is a bug
        shown = "; ".join(f"{display_name(r)} {', '.join(p)}" for r, p in sorted(held.items()))
        fail(f"restore drill roles: FAILED (roles of the dump hold powers in the drill cluster: {shown}); fix: "
             "stop running the drill on cluster dumps ([drill].mode = \"off\") and report this as a bug of "
             "pgbackup-verify")


def _missing_schemas(f: DrillFacts, target: Target) -> tuple[set[str], list[str]]:
    """The schemas expected (configured, or read from the live catalog) and those the restore lacks."""
    assert f.restored is not None
    expected = set(expected_schemas(target)) | (f.live.schemas if f.live else set())
    return expected, sorted(expected - f.restored.schemas)


def _not_in(missing: list[str], names: list[str]) -> list[str]:
    """`schema.object` names outside the missing schemas: those are the schema check's finding."""
    return [n for n in names if n.split(".", 1)[0].strip('"') not in missing]


def test_every_expected_schema_is_restored(drill: DrillFacts, target: Target, evidence: Evidence) -> None:
    f = _ran(drill, evidence, owns=schemas_key(drill.source_path or ""))
    assert f.restored is not None
    expected, missing = _missing_schemas(f, target)
    if f.expected_from:
        evidence("expectation", f.expected_from)
    evidence("expected schemas", ",".join(sorted(expected)) or "none: the live database holds no user schema")
    if not expected and f.live is None:
        fail("restore drill schemas: FAILED (no expectation); fix: set [drill].expected_schemas "
                    "(or [backups].expected_schemas) or [drill].expect_live_catalog = true")
    if missing:
        evidence.require_upstream(READ)  # the grants finding names the schemas lacking USAGE and the GRANT
        # Read from the live catalog, a schema may be one the dump leaves out on purpose.
        deliberate = (" (or, if pg_dump leaves them out on purpose, list them in [database].exclude_schemas)"
                      if f.live is not None else "")
        grant = ("the dump role can read them (the grants checks passed): " if evidence.upstream(READ) == "passed"
                 else "if the grants checks say the dump role lacks USAGE on them, grant it; else ")
        fail(f"restore drill schemas: FAILED (missing after restore: {', '.join(missing)}); "
                    f"fix: {grant}stop excluding them from pg_dump (-n/-N) and check that the dump is newer than "
                    f"them{deliberate}, then check the next dump")


def test_table_count_per_schema_meets_expectation(drill: DrillFacts, target: Target, evidence: Evidence) -> None:
    f = _ran(drill, evidence)
    assert f.restored is not None
    _, gone = _missing_schemas(f, target)  # a schema missing whole is the schema check's finding
    configured = dict(drill_config(target).min_tables)
    live_counts = {s: len(t) for s, t in f.live.tables.items()} if f.live else {}
    schemas = set(expected_schemas(target)) | set(configured) | set(live_counts)
    short, counts = [], []
    for s in sorted(schemas):
        minimum = configured.get(s, live_counts.get(s, 1))
        got = len(f.restored.tables.get(s, ()))
        counts.append(f"{s} {got}/{minimum}")
        if got < minimum and s not in gone:
            short.append(f"{s}: {got} tables vs minimum {minimum}")
    if f.expected_from:
        evidence("expectation", f.expected_from)
    evidence("tables per schema (restored/minimum)", ", ".join(counts))
    missing = _not_in(gone, sorted(f.live.qualified_tables() - f.restored.qualified_tables())) if f.live else []
    if gone and not short and not missing:
        evidence.not_judged(schemas_key(f.source_path or ""), f"restore drill schemas: FAILED (missing after "
                            f"restore: {', '.join(gone)})")
    if missing:
        short.append(f"missing tables: {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
    if short:
        evidence.require_upstream(READ)
        lower = ("write [drill].min_tables (and expected_schemas) for what the dump must hold"
                 if f.live is not None and not configured else "lower [drill].min_tables")
        # Advice about SELECT only where the grants checks did not vouch for it.
        include = ("the dump role can read every table (the grants checks passed): make the dump include them "
                   "(no -n/-N or --exclude-table leaving them out, a dump newer than them)"
                   if evidence.upstream(READ) == "passed"
                   else "make the dump include every table (dump role SELECT, no --exclude-table)")
        fail(f"restore drill tables: FAILED ({'; '.join(short)}); fix: {include} or {lower}")


def test_sequences_views_functions_are_restored(drill: DrillFacts, target: Target, evidence: Evidence) -> None:
    f = _ran(drill, evidence)
    assert f.restored is not None
    d = drill_config(target)
    _, gone = _missing_schemas(f, target)  # objects of a schema missing whole: the schema check's finding
    problems, theirs = [], False
    for kind in KINDS:
        got = f.restored.objects(kind)
        minimum = getattr(d, f"min_{kind}")
        evidence(kind, f"{len(got)} restored (minimum {minimum})")
        if len(got) < minimum:
            problems.append(f"{kind}: {len(got)} vs minimum {minimum}")
        if f.live:
            everything = sorted(f.live.objects(kind) - got)
            missing = _not_in(gone, everything)
            theirs |= len(missing) < len(everything)
            if missing:
                problems.append(f"{kind} missing: {', '.join(missing[:20])}")
    if theirs and not problems:
        evidence.not_judged(schemas_key(f.source_path or ""), f"restore drill schemas: FAILED (missing after "
                            f"restore: {', '.join(gone)})")
    if problems:
        fail(f"restore drill objects: FAILED ({'; '.join(problems)}); {FIX_DUMP}")


def test_every_table_has_the_rows_read_from_the_dump(drill: DrillFacts, evidence: Evidence) -> None:
    f = _ran(drill, evidence)
    assert f.outcome is not None and f.restored is not None
    schema_only = f.tier is not None and f.tier.tier == tiers.SCHEMA
    if f.outcome.rows is None:
        pytest.skip(tiers.NO_DATA if schema_only else
                    f"row fidelity: the dump's rows were not read; {f.fmt} restored with {f.outcome.tool}")
    evidence("rows", f.rows_read)
    if f.rows_restored:
        evidence("restored rows", f.rows_restored)
    for tree, scope in sorted(f.row_scope.items()):
        evidence(f"compared {tree}", scope)
    if f.rows_uncounted:
        evidence("not compared", "; ".join(f"{t}: {why}" for t, why in sorted(f.rows_uncounted.items())))
    if f.matviews:
        evidence("materialized views refreshed", ", ".join(
            f"{m} {'not populated' if n is None else f'{n} rows'}" for m, n in sorted(f.matviews.items())))
    tables = f.restored.table_count()
    if not f.rows and not f.rows_uncounted:
        if tables:
            fail(f"restore drill row fidelity: FAILED (0 rows in 0 COPY blocks and 0 INSERT statements vs "
                 f"{tables} restored tables: the dump holds no table data); fix: the dump job writes the schema "
                 "only (--schema-only, -s, or every table in --exclude-table-data): make it dump the data too")
        pytest.skip("row fidelity: the dump holds no tables and no rows, nothing to compare")
    # A schema or sample drill loads no data into some tables: those must exist, empty.
    # Asked by the names as the dump wrote them (display names do not read back when a name holds a newline).
    loaded = {t: f.tier is None or any(f.tier.wants(k) for k in f.row_keys.get(t, [t])) for t in f.rows}
    if f.tier is not None and not all(loaded.values()):
        evidence("rows compared", f"{sum(loaded.values())} of {len(f.rows)} tables loaded ({f.tier.tier} tier); "
                                  "the others must exist")
    lost = [f"{t}{' (partition tree)' if t in f.row_scope else ''}: "
            f"{'table missing' if got is None else f'{got} rows'} restored vs {n} in the dump"
            for t, (n, got) in sorted(f.rows.items()) if (got != n if loaded[t] else got is None)]
    lost += [f"materialized view {m}: not populated after the dump's REFRESH" for m, n in sorted(f.matviews.items())
             if n is None]
    if lost and all("table missing" in x for x in lost):  # data for a table the restore never created
        fail(f"restore drill row fidelity: FAILED ({'; '.join(lost[:20])}); {FIX_DUMP}")
    if lost:
        fail(f"restore drill row fidelity: FAILED ({'; '.join(lost[:20])}); fix: find what drops "
                    "rows on load (triggers, rules, constraints in the dump) and repair the dump")
    if schema_only:
        pytest.skip(f"{tiers.NO_DATA}; all {len(f.rows)} tables the dump holds data for exist")


def test_every_large_object_is_restored(drill: DrillFacts, evidence: Evidence) -> None:
    f = _ran(drill, evidence)
    dumped = "not known" if f.lo_dump is None else str(f.lo_dump)
    live = "" if f.lo_live is None else f", {f.lo_live} in the live database"
    evidence("large objects", f"{dumped} in the dump, {f.lo_restored} restored{live}")
    problems = []
    if f.lo_dump is not None and f.lo_restored != f.lo_dump:
        problems.append(f"{f.lo_restored} restored vs {f.lo_dump} in the dump")
    if f.lo_live and not f.lo_restored:
        # Only none-at-all is judged against the live database: large objects come and go between
        # the dump and the drill, but a dump without any of them while the database has some is a
        # dump job that leaves them out.
        fail(f"restore drill large objects: FAILED ({f.lo_restored} restored and {dumped} in the dump vs "
             f"{f.lo_live} in the live database); fix: the dump job leaves large objects out: drop --no-blobs "
             "(-B) from its pg_dump options (with -n/-t/--schema also add --blobs), then check the next dump")
    if problems:
        fail(f"restore drill large objects: FAILED ({'; '.join(problems)}); {FIX_DUMP}")


def test_drill_left_nothing_behind(drill: DrillFacts, evidence: Evidence) -> None:
    if drill.skipped:
        pytest.skip(f"restore drill not run: {drill.skipped}")
    evidence("sweep of earlier runs", "; ".join(drill.sweep_log) or "nothing left by earlier runs")
    evidence("cleanup", "; ".join(drill.cleanup_problems) or "ok")
    left = drill.leftovers + drill.cleanup_problems
    if left:
        fail(f"restore drill cleanup: FAILED (left behind: {'; '.join(left)}); fix: remove them by hand "
                    "(dropdb / rm -rf); the next drill's sweep also removes them")


def _record_tier(evidence: Evidence, f: DrillFacts) -> None:
    """Which tier ran (facts/drill/tiers.py): `tier: schema (full on sunday)`."""
    if f.tier is not None:
        evidence("tier", f.tier.describe())  # the Kuma message repeats it (kuma/verdict.py)
        if f.tier.tier == tiers.SAMPLE:
            evidence("sampled tables", f.tier.sampled())


def test_last_full_drill_is_recent_enough(drill: DrillFacts, target: Target, run_history: History,
                                          evidence: Evidence) -> None:
    """A schema or sample drill proves less than a full one: the last passing full drill must be recent."""
    if drill.skipped:
        pytest.skip(f"restore drill not run: {drill.skipped}")
    d = drill_config(target)
    # A drill that stopped before it planned its tier was still today's full drill if one was due.
    ran_full = (drill.tier.tier if drill.tier else tiers.tier_on(d, date.today())) == tiers.FULL
    passed = ran_full and drill.outcome is not None and tiers.restore_passed(
        drill.aborted, drill.outcome.problems, drill.rows)
    age = tiers.full_age(run_history, target.name, passed, time.time())
    _record_tier(evidence, drill)
    evidence("last passing full drill", "never" if age.days is None else
             age.when if age.when == "today" else f"{age.when} ({age.days:.1f} days ago)")
    evidence("max_full_age_days", d.max_full_age_days)
    problem = age.problem(d.max_full_age_days, ran_full)
    if problem:
        day = tiers.next_full_day(d, date.today())
        wait = ("; every drill is full: the other drill checks say why it failed" if d.tier == tiers.FULL
                else f" or wait for {day}" if day else " or set [drill].full_on to a weekday")
        fail(f"restore drill full age: FAILED ({problem}); fix: run a full drill (pgbackup-verify --target "
             f"{target.source} -m drill with [drill].tier = \"full\"){wait}")
