"""Permission guard: can the dump role read everything pg_dump will read, tonight and after
the next schema change? (The seed: sandbox_tac had no USAGE for directus; pg_dump failed for 41 h.)"""

from __future__ import annotations

import pytest

from pgbackup_verify.config import Target
from pgbackup_verify.evidence import Evidence, fail
from pgbackup_verify.facts.grants import Concern, GrantAudit, Missing

pytestmark = pytest.mark.grants

SHOWN = 20  # objects spelled out in a failure message; the evidence holds more
EVIDENCE_MAX = 500
READ = "grants.read"  # upstream key: the dump role can read everything pg_dump reads (evidence.Upstream)


def _role_present(audit: GrantAudit) -> None:
    """Without the role there is nothing to audit: that is a failure, never a silent pass."""
    if not audit.role.exists:
        fail(f"dump role {audit.role.ident}: FAILED (role does not exist vs must exist); "
                    f"fix: {' '.join(audit.role.fixes)}")


def _lines(items: tuple[Missing, ...], limit: int) -> list[str]:
    return [f"{m.kind} {m.ident} (owner {m.owner}) lacks {', '.join(m.privileges)}" + (f" ({m.why})" if m.why else "")
            for m in items[:limit]]


def _judge(check: str, what: str, lack: str, concern: Concern | None, audit: GrantAudit, evidence: Evidence,
           strict: bool = False) -> None:
    """Fail on what makes pg_dump fail; what it does not read is a warning, or a failure when strict."""
    _role_present(audit)
    assert concern is not None
    evidence("audit", f"{audit.queries} catalog queries in one read-only transaction, {audit.seconds:.3f} s")
    evidence(f"{what} audited", concern.audited)
    if audit.role.superuser:  # reads everything, now and later, past row-level security: no grant to audit
        evidence("not audited", f"{audit.role.ident} is a superuser: it reads every {what.rstrip('s')}, now and "
                                "later, whatever is granted (pg_dumpall needs one); no grant is needed or audited")
        return
    if audit.role.reads_all and what != "large objects":  # pg_read_all_data opens none
        evidence("covered", f"{audit.role.ident} is member of pg_read_all_data: has SELECT and USAGE on every "
                            f"{what.rstrip('s')}, now and later" + ("" if audit.role.bypassrls
                                                                   else " (row-level security still stops pg_dump)"))
    missing = concern.missing + (concern.unneeded if strict else ())
    fixes = concern.fixes + (concern.unneeded_fixes if strict else ())
    count = concern.missing_count + (len(concern.unneeded) if strict else 0)
    listed = _lines(missing, EVIDENCE_MAX)
    more = count - len(listed)
    evidence("missing", "\n".join(listed) + (f"\n... and {more} more" if more > 0 else "") if listed else "none")
    if concern.unneeded and not strict:
        evidence("warning: not needed by pg_dump (a failure with [database].strict_grants = true)",
                 "\n".join(_lines(concern.unneeded, EVIDENCE_MAX))
                 + (f"\nfix: {' '.join(concern.unneeded_fixes)}" if concern.unneeded_fixes else ""))
    if not missing:
        return
    evidence("fix", "\n".join(fixes))
    lines = listed[:SHOWN] + ([f"... and {count - SHOWN} more (see evidence)"] if count > SHOWN else [])
    runners = sorted({"a superuser" if m.superuser_fix else m.owner for m in missing} - {"a superuser"})
    privileges = "/".join(dict.fromkeys(p for m in missing for p in m.privileges))
    objects = [m.ident for m in missing]
    shown = ", ".join(objects[:2]) + (f" (+{count - 2} more)" if count > 2 else "")
    evidence.in_short(f"{privileges} missing on {shown} for {audit.role.ident}", objects)
    fail(f"{check}: FAILED ({count} of {concern.audited} {what} {lack} "
         f"{audit.role.ident} vs 0 allowed); fix (as {' or '.join([*runners, 'a superuser'])}): "
         + " ".join(fixes) + "\n  " + "\n  ".join(lines))


def test_dump_role_can_connect(grant_audit: GrantAudit, evidence: Evidence) -> None:
    evidence.cause(READ)  # what pg_dump needs tonight: its failure is the cause of a bad dump
    r = grant_audit.role
    evidence("dump role", f"{r.ident} on database {r.database}")
    evidence("attributes", f"exists {r.exists}, login {r.can_login}, superuser {r.superuser}, "
                           f"password expired {r.expired}, CONNECT {r.can_connect}, "
                           f"pg_read_all_data {r.reads_all}")
    if not r.ok:
        problems = [p for p, bad in (("role does not exist", not r.exists),
                                     ("NOLOGIN", r.exists and not r.can_login),
                                     ("VALID UNTIL passed", r.expired),
                                     (f"no CONNECT on database {r.database}", not r.can_connect and not r.superuser))
                    if bad]
        evidence.in_short(f"dump role {r.ident} cannot connect: {', '.join(problems)}", [r.ident])
        fail(f"dump role can connect: FAILED ({', '.join(problems)} vs login + CONNECT); "
                    f"fix: {' '.join(r.fixes)}")


def test_dump_role_has_usage_on_every_schema(grant_audit: GrantAudit, target: Target, evidence: Evidence) -> None:
    evidence.cause(READ)  # what pg_dump needs tonight: its failure is the cause of a bad dump
    _judge("dump role USAGE on every schema", "schemas", "without USAGE for", grant_audit.schemas,
           grant_audit, evidence, target.database.strict_grants)


def test_dump_role_can_select_every_relation(grant_audit: GrantAudit, target: Target, evidence: Evidence) -> None:
    """pg_dump locks and COPYs every table and partition (row-level security stops it); it
    only describes views, materialized views and foreign tables."""
    evidence.cause(READ)  # what pg_dump needs tonight: its failure is the cause of a bad dump
    _judge("dump role reads every table", "relations", "unreadable by", grant_audit.relations,
           grant_audit, evidence, target.database.strict_grants)


def test_dump_role_can_read_every_sequence(grant_audit: GrantAudit, target: Target, evidence: Evidence) -> None:
    evidence.cause(READ)  # what pg_dump needs tonight: its failure is the cause of a bad dump
    _judge("dump role SELECT on every sequence", "sequences", "without SELECT for",
           grant_audit.sequences, grant_audit, evidence, target.database.strict_grants)


def test_dump_role_can_read_every_large_object(grant_audit: GrantAudit, evidence: Evidence) -> None:
    """pg_dump opens every large object unless the job leaves them out ([database].dump_options)."""
    evidence.cause(READ)  # what pg_dump needs tonight: its failure is the cause of a bad dump
    job = grant_audit.job
    evidence("job dumps large objects", "yes" if job.large_objects else "no ([database].dump_options)")
    if grant_audit.lo_compat_privileges:
        evidence("lo_compat_privileges", "on: the server checks no large-object privilege")
    _judge("dump role SELECT on every large object", "large objects", "without SELECT for",
           grant_audit.large_objects, grant_audit, evidence)


def test_default_privileges_cover_future_objects(grant_audit: GrantAudit, evidence: Evidence) -> None:
    """Tonight's grants do not cover tomorrow's table: other owners' default privileges must."""
    _judge("default privileges cover objects other owners create later",
           "default ACLs (owner x schema x tables/sequences)", "without grants to",
           grant_audit.default_privileges, grant_audit, evidence)


def test_local_pg_dump_not_older_than_server(grant_audit: GrantAudit, evidence: Evidence) -> None:
    v = grant_audit.pg_dump
    evidence("local pg_dump", f"{v.path or 'none on PATH'}: {v.local}")
    evidence("server", v.server)
    if not v.ok:
        fail(f"local pg_dump not older than server: FAILED (pg_dump {v.local} vs server {v.server}); "
                    f"fix: {v.fix}")
