"""Every fix text is checked against the faults that fire it: no advice to grant what is granted, no
advice to pipe pg_dump through gzip when the file is gzip.

One demo build (the seed-shaped database, a healthy week, the host and the offsite remote). Each fault
below is injected into that live database and a copy of the week, the shipped checks run over it (one
subprocess per fault), and while the fault is still in place every GRANT that a failing check advises is
asked of the live database (has_schema_privilege, has_table_privilege, ...): each privilege it names must
really be missing for the dump role. A GRANT with no object ("GRANT USAGE ON SCHEMA ...") is advice only
where the grants checks did not pass. No check blames the upload for a size difference that a local
dump the dump checks found bad explains. Then the fault is undone for the next one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from checkrun import TargetResult, run_checks
from demohost import built_demo
from pgbackup_verify_demo import demo

from pgbackup_verify import ownership

CHECKS = Path(__file__).resolve().parent.parent / "checks"
pytestmark = pytest.mark.slow
GRANTS_READ = {"test_dump_role_can_connect", "test_dump_role_has_usage_on_every_schema",
               "test_dump_role_can_select_every_relation", "test_dump_role_can_read_every_sequence"}
GZIP_ADVICE = "pipe pg_dump through gzip"
UPLOAD_BLAMED = "the upload packed a different or broken file"
LOCAL_BAD = ("test_latest_dump_payload_reaches_minimum", "test_latest_dump_gzip_stream_is_valid",
             "test_latest_dump_has_pg_dump_header_and_footer")
# Prose that points at a privilege of the dump role as the thing to fix ("dump role SELECT").
PRIVILEGE_ADVICE = re.compile(r"\bdump role (?:SELECT|USAGE)\b|\bgrant (?:it|SELECT|USAGE)\b")

# `[ALTER DEFAULT PRIVILEGES FOR ROLE o IN SCHEMA s] GRANT p[, p] ON <kind> <objects> TO <role>`
GRANT = re.compile(r"(?:ALTER DEFAULT PRIVILEGES FOR ROLE (?P<owner>\S+) IN SCHEMA (?P<dschema>\S+) )?"
                   r"GRANT (?P<privs>[A-Z]+(?:, [A-Z]+)*) ON (?:(?P<future>TABLES|SEQUENCES)|"
                   r"(?P<kind>ALL TABLES IN SCHEMA|ALL SEQUENCES IN SCHEMA|SCHEMA|TABLE|SEQUENCE|DATABASE) "
                   r"(?P<objects>.+?)) TO (?P<role>[^\s;]+)")


def pg_dump_to(d: demo.Demo, path: Path, *args: str, gzip: bool = True) -> int:
    """The dump role's real pg_dump (piped through gzip -9 like the seed's job, or -Fc to a file)."""
    env = {**d.cluster.env(), "PGUSER": demo.DUMP_ROLE}
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        if not gzip:
            return subprocess.run(["pg_dump", *args, "-d", demo.DBNAME], env=env, stdout=out,
                                  stderr=subprocess.DEVNULL, check=False).returncode
        dump = subprocess.Popen(["pg_dump", "--no-owner", "--no-acl", *args, "-d", demo.DBNAME], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert dump.stdout is not None
        subprocess.run(["gzip", "-9"], stdin=dump.stdout, stdout=out, check=True)
        dump.stdout.close()
        return dump.wait()


def newest(b: Path, pattern: str = "directus_*.sql.gz") -> Path:
    return max(b.glob(pattern), key=lambda p: p.stat().st_mtime)


def _redump(*args: str) -> Callable[[demo.Demo, Path], str]:
    """Tonight's dump taken again by the real pg_dump, under the fault, in place of the newest."""
    def write(d: demo.Demo, b: Path) -> str:
        p = newest(b)
        st = p.stat()
        pg_dump_to(d, p, *args)
        os.utime(p, (st.st_mtime, st.st_mtime))
        return ""
    return write


def _cut(d: demo.Demo, b: Path) -> str:
    p = newest(b)
    st = p.stat()
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    os.utime(p, (st.st_mtime, st.st_mtime))
    return ""


def _stale(d: demo.Demo, b: Path) -> str:
    """The job (and the rotation it runs) stopped two nights ago: every dump is two days older, the newest
    ~49 h old, and the week before it is still there."""
    for p in b.glob("directus_*.sql.gz"):
        st = p.stat()
        os.utime(p, (st.st_atime - 2 * 86400, st.st_mtime - 2 * 86400))
    return ""


def _custom_without_sandbox(d: demo.Demo, b: Path) -> str:
    """Tonight's dump is a -Fc archive that leaves sandbox_tac out (-N): the role reads it, the job's options
    drop it. The older nights keep their plain dumps (a job switched to -Fc tonight): one fault, not seven."""
    old = newest(b)
    p = old.with_name(old.name.replace(".sql.gz", ".dump"))
    pg_dump_to(d, p, "-Fc", "-N", "sandbox_tac", gzip=False)
    os.utime(p, (old.stat().st_mtime, old.stat().st_mtime))
    old.unlink()
    return "directus_*"


@dataclass(frozen=True)
class Fault:
    make_dump: Callable[[demo.Demo, Path], str] | None  # returns a new [backups].pattern or ""
    fires: set[str]  # the check that owns the fault (ownership.OWNERS): it fails, and no other of its kind
    sql: str = ""  # applied as superuser before the dump is made ...
    undo: str = ""  # ... and undone after the run
    causes: frozenset[str] = frozenset()  # declared causes in an earlier concern (ownership.CAUSES): red too


FAULTS: dict[str, Fault] = {
    "seed-night": Fault(
        _redump(), {"test_latest_dump_payload_reaches_minimum"},
        "REVOKE USAGE ON SCHEMA sandbox_tac FROM directus", "GRANT USAGE ON SCHEMA sandbox_tac TO directus",
        frozenset({"test_dump_role_has_usage_on_every_schema"})),
    "registry-lock": Fault(
        None, {"test_custom_sql_check"},
        demo.registry_function_sql(demo.REGISTRY_FUNCTIONS[-1], locked=False),
        demo.registry_function_sql(demo.REGISTRY_FUNCTIONS[-1], locked=True)),
    "table select revoked": Fault(
        _redump(), {"test_latest_dump_payload_reaches_minimum"},
        "REVOKE SELECT ON sandbox_tac.item_01 FROM directus", "GRANT SELECT ON sandbox_tac.item_01 TO directus",
        frozenset({"test_dump_role_can_select_every_relation"})),
    # Three faults at once (three REVOKEs): one red line each, no dump finding (tonight's dump was good).
    "grants revoked after tonight's good dump": Fault(
        None, {"test_dump_role_can_select_every_relation", "test_dump_role_can_read_every_sequence",
               "test_default_privileges_cover_future_objects"},
        "REVOKE SELECT ON ALL TABLES IN SCHEMA sandbox_tac FROM directus; "
        "REVOKE USAGE, SELECT ON SEQUENCE sandbox_tac.item_00_id_seq FROM directus; "
        "ALTER DEFAULT PRIVILEGES FOR ROLE workflow_admin IN SCHEMA sandbox_tac REVOKE SELECT ON TABLES FROM directus",
        "GRANT SELECT ON ALL TABLES IN SCHEMA sandbox_tac TO directus; "
        "GRANT USAGE, SELECT ON SEQUENCE sandbox_tac.item_00_id_seq TO directus; "
        "ALTER DEFAULT PRIVILEGES FOR ROLE workflow_admin IN SCHEMA sandbox_tac GRANT SELECT ON TABLES TO directus"),
    "cut dump": Fault(_cut, {"test_latest_dump_gzip_stream_is_valid"}),
    "stale dump": Fault(_stale, {"test_latest_dump_is_younger_than_max_age"}),
    "schema left out of a plain dump": Fault(_redump("-N", "sandbox_tac"), {"test_every_expected_schema_is_restored"}),
    "schema left out of a -Fc dump": Fault(_custom_without_sandbox, {"test_custom_format_toc_lists_expected_schemas"}),
}


@dataclass
class FaultRun:
    result: TargetResult
    grants_checked: list[str] = field(default_factory=list)  # "check: GRANT ..." asked of the live database
    wrong: list[str] = field(default_factory=list)  # advice the live database contradicts


def _name(ident: str) -> str:
    """The name an SQL identifier spells (the fixes quote where SQL needs it): for the catalog functions
    that take a name, not an identifier."""
    return ident[1:-1].replace('""', '"') if ident.startswith('"') and ident.endswith('"') else ident


def _held(conn: psycopg.Connection, m: re.Match[str], priv: str) -> tuple[bool, str]:
    """Does the dump role already hold `priv` on what the GRANT names? (True, why) if so."""
    role, kind, objects = m["role"], m["kind"], m["objects"]
    if m["future"]:
        objtype = "r" if m["future"] == "TABLES" else "S"
        held = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, "
            "aclexplode(d.defaclacl) a WHERE d.defaclrole = %s::regrole AND n.nspname = %s "
            "AND d.defaclobjtype = %s AND a.grantee = %s::regrole AND a.privilege_type = %s)",
            (m["owner"], _name(m["dschema"]), objtype, role, priv)).fetchone()
        return bool(held and held[0]), "default privilege already set"
    if kind.startswith("ALL "):
        relkinds = ["S"] if "SEQUENCES" in kind else ["r", "p", "v", "m", "f"]
        fn = "has_sequence_privilege" if "SEQUENCES" in kind else "has_table_privilege"
        lacking = conn.execute(
            f"SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = %s AND c.relkind = ANY(%s) AND NOT {fn}(%s, c.oid, %s)",
            (_name(objects), relkinds, _name(role), priv)).fetchone()
        return not (lacking and lacking[0]), "every object in the schema has it"
    fn = {"SCHEMA": "has_schema_privilege", "TABLE": "has_table_privilege", "SEQUENCE": "has_sequence_privilege",
          "DATABASE": "has_database_privilege"}[kind]
    obj = _name(objects) if kind in ("SCHEMA", "DATABASE") else objects  # tables, sequences: identifiers
    held = conn.execute(f"SELECT {fn}(%s, %s, %s)", (_name(role), obj, priv)).fetchone()
    return bool(held and held[0]), "already held"


def judge_advice(conn: psycopg.Connection, result: TargetResult, backups: Path, pattern: str) -> FaultRun:
    run = FaultRun(result)
    grants_passed = all(result.outcome(c) == "passed" for c in GRANTS_READ)
    latest = newest(backups, pattern) if list(backups.glob(pattern)) else None
    is_gzip = latest is not None and latest.read_bytes()[:2] == b"\x1f\x8b"
    local_bad = any(result.outcome(c) == "failed" for c in LOCAL_BAD)
    for c in result.checks:
        if c["outcome"] != "failed":
            continue
        text = c["message"]
        parsed = list(GRANT.finditer(text))
        if len(parsed) != len(re.findall(r"\bGRANT\b", text)):  # never a GRANT left unchecked
            run.wrong.append(f"{c['name']}: a GRANT this test cannot parse: {text}")
        for m in parsed:
            run.grants_checked.append(f"{c['name']}: {m[0]}")
            if (m["objects"] or "").strip() == "...":
                if grants_passed:
                    run.wrong.append(f"{c['name']} advises {m[0]!r} although the grants checks passed")
                continue
            if m["role"].strip('"') != demo.DUMP_ROLE:
                run.wrong.append(f"{c['name']} grants to {m['role']}, not the dump role {demo.DUMP_ROLE}")
            for priv in m["privs"].split(", "):
                held, why = _held(conn, m, priv)
                if held:
                    run.wrong.append(f"{c['name']} advises {m[0]!r}: {priv} {why}")
        fix = text.split("fix", 1)[1] if "fix" in text else ""
        if grants_passed and (prose := PRIVILEGE_ADVICE.search(fix)):
            run.wrong.append(f"{c['name']} points at a privilege ({prose[0]!r}) although the grants checks passed")
        if UPLOAD_BLAMED in text and local_bad:
            run.wrong.append(f"{c['name']} blames the upload although the dump checks found the local dump bad")
        if GZIP_ADVICE in text and is_gzip:
            run.wrong.append(f"{c['name']} advises to {GZIP_ADVICE!r} but {latest} is gzip")
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.Demo]:
    yield from built_demo(tmp_path_factory, "fix-texts-demo")


@pytest.fixture(scope="module")
def runs(built: demo.Demo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, FaultRun]:
    root = tmp_path_factory.mktemp("fix-texts")
    healthy = built.workdir / "backups"
    template = built.target_file.read_text()
    out = {}
    with psycopg.connect(built.cluster.dsn(demo.DBNAME), autocommit=True) as conn:
        for case, fault in FAULTS.items():
            slug = re.sub(r"\W+", "-", case)
            b = root / slug / "backups"
            shutil.copytree(healthy, b)
            if fault.sql:
                conn.execute(fault.sql)  # type: ignore[arg-type]  # our own fixed statements
            try:
                pattern = (fault.make_dump(built, b) if fault.make_dump else "") or "directus_*.sql.gz"
                text = (template.replace(f'directory = "{healthy}"', f'directory = "{b}"')
                        .replace('name = "demo"', f'name = "{slug}"')
                        .replace('pattern = "directus_*.sql.gz"', f'pattern = "{pattern}"'))
                t = root / slug / "t.toml"
                # The drill restores into a scratch database of the demo's own server: the same drill and
                # fix texts, without a cluster started per fault.
                t.write_text(text + f'\n[drill]\nmode = "scratch"\nserver_dsn = "{built.cluster.dsn()}"\n'
                             'allow_superuser_restore = true\n'
                             f'lock_file = "{root / slug / "drill.lock"}"\n')
                checks_run = run_checks(root / slug / "run", [t], [CHECKS], "-p", "no:xdist")
                abort = checks_run.doc.get("abort")
                assert not abort, f"{case}: {abort}\n{checks_run.stdout[-3000:]}"
                out[case] = judge_advice(conn, checks_run[slug], b, pattern)
            finally:
                if fault.undo:
                    conn.execute(fault.undo)  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("case", list(FAULTS))
def test_every_fix_fits_the_live_database(runs: dict[str, FaultRun], case: str) -> None:
    run = runs[case]
    assert FAULTS[case].fires | FAULTS[case].causes <= run.result.failed(), run.result.text
    assert not [c for c in run.result.checks if c["outcome"] == "error"], run.result.text
    assert not run.wrong, "\n".join(run.wrong) + "\n\n" + run.result.text


def test_the_grants_advised_were_asked_of_the_live_database(runs: dict[str, FaultRun]) -> None:
    """Not vacuous: the faults that take a privilege away get a GRANT, and it was checked."""
    assert any("GRANT USAGE ON SCHEMA sandbox_tac TO directus" in g for g in runs["seed-night"].grants_checked)
    assert any("GRANT SELECT ON TABLE sandbox_tac.item_01 TO directus" in g
               for g in runs["table select revoked"].grants_checked), runs["table select revoked"].grants_checked
    revoked = runs["grants revoked after tonight's good dump"].grants_checked
    for statement in ("GRANT SELECT ON ALL TABLES IN SCHEMA sandbox_tac TO directus",
                      "GRANT SELECT ON SEQUENCE sandbox_tac.item_00_id_seq TO directus",  # pg_dump needs no USAGE
                      "ALTER DEFAULT PRIVILEGES FOR ROLE workflow_admin IN SCHEMA sandbox_tac GRANT SELECT ON TABLES "
                      "TO directus"):
        assert any(statement in g for g in revoked), (statement, revoked)
    for case in ("registry-lock", "cut dump", "stale dump", "schema left out of a plain dump",
                 "schema left out of a -Fc dump"):
        assert not runs[case].grants_checked, (case, runs[case].grants_checked)


def test_a_bad_local_dump_is_not_blamed_on_the_upload(runs: dict[str, FaultRun]) -> None:
    """The offsite size match of a local dump the dump checks found bad is not judged, naming their finding."""
    for case in ("seed-night", "table select revoked", "cut dump"):
        [match] = [c for c in runs[case].result.checks if c["name"] == "test_offsite_pg_dump_matches_the_local_dump"]
        assert (match["outcome"], match["kind"]) == ("skipped", "not judged"), (case, match)
        assert match["message"].startswith("not judged: latest dump "), (case, match["message"])


def test_the_live_check_sees_privileges_that_are_held(built: demo.Demo, runs: dict[str, FaultRun]) -> None:
    """The other half of the proof: on the healthy database (every fault undone) each kind of GRANT the
    fixes write is seen as held, so "not held" above is the database's answer, not the test's blindness."""
    held = ["GRANT USAGE ON SCHEMA sandbox_tac TO directus;", "GRANT SELECT ON TABLE sandbox_tac.item_01 TO directus;",
            "GRANT SELECT ON ALL TABLES IN SCHEMA sandbox_tac TO directus;",
            "GRANT USAGE, SELECT ON SEQUENCE sandbox_tac.item_00_id_seq TO directus;",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA sandbox_tac TO directus;",
            'GRANT CONNECT ON DATABASE "directus" TO directus;',
            "ALTER DEFAULT PRIVILEGES FOR ROLE workflow_admin IN SCHEMA sandbox_tac GRANT SELECT ON TABLES "
            "TO directus;",
            "ALTER DEFAULT PRIVILEGES FOR ROLE workflow_admin IN SCHEMA sandbox_tac GRANT USAGE, SELECT ON SEQUENCES "
            "TO directus;"]
    with psycopg.connect(built.cluster.dsn(demo.DBNAME), autocommit=True) as conn:
        for statement in held:
            [m] = GRANT.finditer(statement)
            assert all(_held(conn, m, p)[0] for p in m["privs"].split(", ")), statement
        conn.execute("CREATE ROLE fix_texts_probe")
        try:
            [m] = GRANT.finditer("GRANT SELECT ON TABLE sandbox_tac.item_01 TO fix_texts_probe;")
            assert not _held(conn, m, "SELECT")[0]
        finally:
            conn.execute("DROP ROLE fix_texts_probe")


@pytest.mark.parametrize("case", list(FAULTS))
def test_one_fault_one_red_line(runs: dict[str, FaultRun], case: str) -> None:
    """Exactly the owner of each injected fault fails (plus its declared cause); the checks that only see a
    consequence are not judged, naming a finding that is on a red line; no message names a function."""
    result, fault = runs[case].result, FAULTS[case]
    # Under the parallel suite other runs' drills use the same work dir: the cleanup check must not name
    # their live clusters (run._leftovers), so no case is set aside.
    red = {c["name"] for c in result.checks if c["outcome"] in ("failed", "error")}
    assert red == fault.fires | fault.causes, result.text
    assert all(ownership.owner_of(name) is not None for name in red), red  # each owner is in the table
    for cause in fault.causes:  # a declared cause explains the owner's fault (ownership.CAUSES)
        effects = {e for k in ownership.BY_CHECK[cause].keys for e in ownership.CAUSES_BY_KEY.get(k, ())}
        assert any(set(ownership.BY_CHECK[f].keys) & effects for f in fault.fires), (cause, fault.fires)
    findings = [c["message"].split("; fix")[0] for c in result.checks if c["name"] in red]
    for c in result.checks:
        assert not re.search(r"\btest_\w+", c["message"]), c["message"]  # readable names, never a function's
        if c["kind"] == "not judged":
            said = c["message"].removeprefix("not judged: ")
            assert any(said.startswith(f.split(";")[0]) for f in findings) or said.startswith("offsite"), \
                (c["name"], said, findings)
