"""Every fix the grants checks print is safe to paste into psql as a superuser, whatever the names.

A role with CREATEROLE (or a schema or table owner) chooses names; the report tells the admin to
run its fix "as <owner> or a superuser". Here every name the fixes can mention (schema, table,
sequence, the owners of objects and of large objects) is hostile: dollar quotes that would close
the DO body's `$pgbv$`, `;`, `--`, quotes, backslashes, newlines, psql variables and meta-commands,
unicode. The real checks run over the faults, and EVERY fix text they print is pasted into the real
`psql -X -v ON_ERROR_STOP=1` as the cluster's superuser. Afterwards: no role attribute changed but
the intended one (the dump role's BYPASSRLS), no role became superuser, no object appeared, every
ACL entry added grants USAGE or SELECT to the dump role and none was taken away, and the audit
passes. One throwaway cluster and one checks run for the module.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from checkrun import ChecksRun, run_checks
from psycopg import sql

from pgbackup_verify.config import load_target
from pgbackup_verify.facts import grants
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.redact import CONTROL_CHARS

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_grants.py"
DB = "paste_db"
PAYLOAD = "ALTER ROLE app SUPERUSER;"
# Each (at most 63 bytes: PostgreSQL cuts longer names) is a role owning large objects, a schema
# owned by it and a table in that schema.
HOSTILE = (
    f"$pgbv$;{PAYLOAD}--",
    f"$pgbv$ END$pgbv$; {PAYLOAD} DO $pgbv$BEGIN",
    f"x'; {PAYLOAD} --",
    f"x''); {PAYLOAD} --",
    f'q"; {PAYLOAD} --',
    f"b\\'; {PAYLOAD} -- \\",
    f"n\nl; {PAYLOAD}\n--",
    f"$$;{PAYLOAD}$$ ünï ✈",
    ":e :'e' :\"e\" \\! touch /tmp/pgbv-pwned\n\\gexec",
    f"*/ {PAYLOAD} /*",
    f"\x1b[2J\r\x07\u202e\x9b {PAYLOAD}",  # terminal controls: the fix spells it U&"\001b..."
)
# Two targets audit the same database: one dump role hostile too (it comes from root's target file,
# but quoting must not care), one plain (the report's own text around the names is then all plain).
DUMP_ROLES = {"hostile": f'dump $pgbv$"\'{PAYLOAD}--', "plain": "dump_plain"}
MANY_LO = grants.PER_OBJECT_FIXES + 2  # past PER_OBJECT_FIXES the fix is the owner's DO loop


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def build(conn: psycopg.Connection) -> None:
    """The hostile layout: every object lacks what the dump role needs; one table is under RLS."""
    run = conn.execute
    run("CREATE ROLE app LOGIN")  # the role the payload would make superuser
    for role in DUMP_ROLES.values():
        run(sql.SQL("CREATE ROLE {} LOGIN").format(ident(role)))
    for i, name in enumerate(HOSTILE):
        owner, schema = ident(name), ident(name)
        run(sql.SQL("CREATE ROLE {}").format(owner))
        run(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(ident(DB), owner))
        run(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, owner))
        run(sql.SQL("SET ROLE {}").format(owner))
        run(sql.SQL("CREATE TABLE {}.{} (id serial PRIMARY KEY, v text)").format(schema, ident(name)))
        run(sql.SQL("CREATE VIEW {}.{} AS SELECT 1 AS one").format(schema, ident(f"view {name}")))
        run(sql.SQL("CREATE SEQUENCE {}.{}").format(schema, ident(f"seq {name}")))
        run("SELECT lo_create(0) FROM generate_series(1, %s)", (MANY_LO if i % 2 == 0 else 2,))
        if i == 0:  # a schema with more tables than PER_OBJECT_FIXES: the ALL TABLES IN SCHEMA fix
            for k in range(grants.PER_OBJECT_FIXES + 1):
                run(sql.SQL("CREATE TABLE {}.{} (x int)").format(schema, ident(f"{name} {k}")))
        if i == 1:  # row-level security: the fix is ALTER ROLE <dump role> BYPASSRLS
            run(sql.SQL("ALTER TABLE {}.{} ENABLE ROW LEVEL SECURITY").format(schema, ident(name)))
        run("RESET ROLE")


SNAPSHOT = {
    "roles": "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
             "rolbypassrls, rolconnlimit, rolvaliduntil::text FROM pg_roles ORDER BY rolname",
    "members": "SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members ORDER BY 1, 2",
    "role settings": "SELECT setrole, setdatabase, setconfig::text FROM pg_db_role_setting ORDER BY 1, 2",
    "objects": "SELECT (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_namespace), "
               "(SELECT count(*) FROM pg_proc), (SELECT count(*) FROM pg_event_trigger), "
               "(SELECT count(*) FROM pg_trigger), (SELECT count(*) FROM pg_largeobject_metadata), "
               "(SELECT count(*) FROM pg_database), (SELECT count(*) FROM pg_policy)",
    # Every ACL entry of the database: (object, grantee, privilege, grantable); a NULL ACL is its
    # owner's defaults (the first GRANT writes them out).
    "acl": """
        SELECT 'schema ' || n.oid, a.grantee::regrole::text, a.privilege_type, a.is_grantable
          FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
        UNION ALL SELECT 'rel ' || c.oid, a.grantee::regrole::text, a.privilege_type, a.is_grantable
          FROM pg_class c, aclexplode(coalesce(
              c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
        UNION ALL SELECT 'lo ' || l.oid, a.grantee::regrole::text, a.privilege_type, a.is_grantable
          FROM pg_largeobject_metadata l, aclexplode(coalesce(l.lomacl, acldefault('L', l.lomowner))) a
        UNION ALL SELECT 'defacl ' || d.defaclrole || '/' || d.defaclnamespace || '/' || d.defaclobjtype::text,
                         a.grantee::regrole::text, a.privilege_type, a.is_grantable
          FROM pg_default_acl d, aclexplode(d.defaclacl) a
        UNION ALL SELECT 'db ' || d.oid, a.grantee::regrole::text, a.privilege_type, a.is_grantable
          FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
        UNION ALL SELECT 'fn ' || p.oid, a.grantee::regrole::text, a.privilege_type, a.is_grantable
          FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a""",
}


def snapshot(cluster: ThrowawayCluster) -> dict[str, set[tuple[Any, ...]]]:
    with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
        return {k: set(conn.execute(q).fetchall()) for k, q in SNAPSHOT.items()}  # type: ignore[arg-type]


@dataclass
class Pasted:
    run: ChecksRun
    fixes: dict[tuple[str, str], str]  # (target, check) -> the fix text it printed
    psql: dict[tuple[str, str, str], subprocess.CompletedProcess[str]]  # (target, check, ON_ERROR_STOP=...)
    before: dict[str, set[tuple[Any, ...]]]
    after: dict[str, set[tuple[Any, ...]]]
    audits_after: dict[str, grants.GrantAudit]


def printed_fixes(run: ChecksRun) -> dict[tuple[str, str], str]:
    """Every fix text a failing grants check printed: its evidence `fix` (the statements, one a line),
    which its one-line finding repeats after `fix (as ...): `; the connect check's after `fix: `."""
    out = {}
    for c in run.doc["checks"]:
        if c["outcome"] != "failed":
            continue
        ev = dict(c["evidence"])
        if "fix" in ev:
            out[c["target"], c["name"]] = ev["fix"]
            assert " ".join(ev["fix"].split("\n")) in " ".join(c["message"].split("\n")) or \
                ev["fix"].replace("\n", " ") in c["detail"].replace("\n", " "), (c["name"], ev["fix"])
        elif "fix: " in c["message"]:
            out[c["target"], c["name"]] = c["message"].split("fix: ", 1)[1]
    return out


@pytest.fixture(scope="module")
def pasted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pasted]:
    root = tmp_path_factory.mktemp("paste-fixes")
    with ThrowawayCluster(tag="paste-") as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident(DB)))
        with psycopg.connect(cluster.dsn(DB), autocommit=True) as conn:
            build(conn)
        targets = {}
        for name, role in DUMP_ROLES.items():
            targets[name] = root / f"{name}.toml"
            targets[name].write_text(f'[target]\nname = "{name}"\n[database]\ndsn = {json.dumps(cluster.dsn(DB))}\n'
                                     f"dump_role = {json.dumps(role)}\nstrict_grants = true\n"
                                     f"[backups]\ndirectory = {json.dumps(str(root))}\n")
        run = run_checks(root / "run", targets.values(), [CHECKS])
        fixes = printed_fixes(run)
        before = snapshot(cluster)
        results = {}
        # Twice each: as a script that stops at the first error (exit 0 proves no statement failed),
        # then as a person pastes into an interactive psql, which goes on after an error (the second
        # run of a GRANT changes nothing).
        for stop in ("ON_ERROR_STOP=1", "ON_ERROR_STOP=0"):
            for (target, check), text in fixes.items():
                results[target, check, stop] = subprocess.run(
                    ["psql", "-X", "-q", "-v", stop, "-d", DB], input=text, env=cluster.env(), capture_output=True,
                    text=True, timeout=120, check=False)
        after = snapshot(cluster)
        yield Pasted(run, fixes, results, before, after, {n: grants.audit(load_target(t)) for n, t in targets.items()})


FAILING = {"test_dump_role_has_usage_on_every_schema", "test_dump_role_can_select_every_relation",
           "test_dump_role_can_read_every_sequence", "test_dump_role_can_read_every_large_object",
           "test_default_privileges_cover_future_objects"}


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def printed(name: str) -> str:
    """How a fix spells the name: as the server quotes it, in U&"..." form when it holds a control character."""
    return grants.sql_ident(quoted(name))


@pytest.mark.parametrize("target", list(DUMP_ROLES))
def test_every_grants_check_fails_and_prints_a_fix(pasted: Pasted, target: str) -> None:
    """Not vacuous: each concern fired with hostile names in its fix, the DO loop among them."""
    result = pasted.run[target]
    assert result.failed() == FAILING, result.text
    assert {check for t, check in pasted.fixes if t == target} == FAILING
    every = "\n".join(text for (t, _), text in pasted.fixes.items() if t == target)
    assert every.count("DO $pgbv$DECLARE o oid;") == len(HOSTILE[::2])  # one loop per owner with many large objects
    assert "BYPASSRLS" in every and "ALL TABLES IN SCHEMA" in every and "ALTER DEFAULT PRIVILEGES" in every
    for name in HOSTILE:  # each hostile name is in some fix, quoted as the server quotes it
        assert printed(name) in every, printed(name)
    assert not CONTROL_CHARS.search(every)  # what the console shows is what psql gets


def test_psql_as_superuser_runs_every_fix_without_error(pasted: Pasted) -> None:
    for (target, check, stop), proc in pasted.psql.items():
        assert proc.returncode == 0 and not proc.stderr, \
            f"{target} {check} {stop}: psql exit {proc.returncode}: {proc.stderr}\n{pasted.fixes[target, check]}"
    assert not Path("/tmp/pgbv-pwned").exists()


def test_no_role_changed_but_the_dump_roles_bypassrls(pasted: Pasted) -> None:
    before = {r[0]: r for r in pasted.before["roles"]}
    after = {r[0]: r for r in pasted.after["roles"]}
    assert not after["app"][1], "app became superuser"
    assert [r for r in after.values() if r[1]] == [after["postgres"]]  # the one superuser stays the only one
    assert set(before) == set(after)  # no role created or dropped
    changed = {name for name in before if before[name] != after[name]}
    assert changed == set(DUMP_ROLES.values()), changed
    bypass = 7  # rolbypassrls
    for role in DUMP_ROLES.values():
        assert after[role][:bypass] + after[role][bypass + 1:] == before[role][:bypass] + before[role][bypass + 1:]
        assert not before[role][bypass] and after[role][bypass]
    for k in ("members", "role settings", "objects"):
        assert pasted.before[k] == pasted.after[k], k


def test_only_usage_and_select_to_the_dump_roles_were_added(pasted: Pasted) -> None:
    removed = pasted.before["acl"] - pasted.after["acl"]
    added = pasted.after["acl"] - pasted.before["acl"]
    assert not removed, removed
    assert added and {(grantee, priv, grantable) for _, grantee, priv, grantable in added} <= {
        (grantee, priv, False) for grantee in (quoted(DUMP_ROLES["hostile"]), "dump_plain")
        for priv in ("USAGE", "SELECT")}, added


@pytest.mark.parametrize("target", list(DUMP_ROLES))
def test_the_audit_passes_after_the_fixes(pasted: Pasted, target: str) -> None:
    a = pasted.audits_after[target]
    assert a.role.ok and all(c is not None and c.ok and not c.unneeded for c in
                             (a.schemas, a.relations, a.sequences, a.default_privileges, a.large_objects)), a
