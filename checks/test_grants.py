"""Permission guard: can the dump role read everything pg_dump will read, tonight and after
the next schema change? (The seed: sandbox_tac had no USAGE for directus; pg_dump failed for 41 h.)"""

from __future__ import annotations

import pytest

from pgbackup_verify.evidence import Evidence, fail
from pgbackup_verify.facts.grants import Concern, GrantAudit

pytestmark = pytest.mark.grants

SHOWN = 20  # objects spelled out in a failure message; the evidence holds more
EVIDENCE_MAX = 500
READ = "grants.read"  # upstream key: the dump role can read everything pg_dump reads (evidence.Upstream)


def _role_present(audit: GrantAudit) -> None:
    """Without the role there is nothing to audit: that is a failure, never a silent pass."""
    if not audit.role.exists:
        fail(f"dump role {audit.role.ident}: FAILED (role does not exist vs must exist); "
                    f"fix: {' '.join(audit.role.fixes)}")


def _judge(check: str, what: str, lack: str, concern: Concern | None, audit: GrantAudit, evidence: Evidence) -> None:
    _role_present(audit)
    assert concern is not None
    evidence("audit", f"{audit.queries} catalog queries in one read-only transaction, {audit.seconds:.3f} s")
    evidence(f"{what} audited", concern.audited)
    if audit.role.superuser or audit.role.reads_all:
        why = "superuser" if audit.role.superuser else "member of pg_read_all_data"
        evidence("covered", f"{audit.role.ident} is {why}: reads every {what.rstrip('s')}, now and later")
    listed = [f"{m.kind} {m.ident} (owner {m.owner}) lacks {', '.join(m.privileges)}"
              for m in concern.missing[:EVIDENCE_MAX]]
    more = len(concern.missing) - len(listed)
    evidence("missing", "\n".join(listed) + (f"\n... and {more} more" if more > 0 else "") if listed else "none")
    if concern.ok:
        return
    evidence("fix", "\n".join(concern.fixes))
    lines = listed[:SHOWN] + ([f"... and {len(concern.missing) - SHOWN} more (see evidence)"]
                              if len(concern.missing) > SHOWN else [])
    owners = sorted({m.owner for m in concern.missing})
    fail(f"{check}: FAILED ({len(concern.missing)} of {concern.audited} {what} {lack} "
                f"{audit.role.ident} vs 0 allowed); fix (as {' or '.join(owners)} or a superuser): "
                + " ".join(concern.fixes) + "\n  " + "\n  ".join(lines))


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
        fail(f"dump role can connect: FAILED ({', '.join(problems)} vs login + CONNECT); "
                    f"fix: {' '.join(r.fixes)}")


def test_dump_role_has_usage_on_every_schema(grant_audit: GrantAudit, evidence: Evidence) -> None:
    evidence.cause(READ)  # what pg_dump needs tonight: its failure is the cause of a bad dump
    _judge("dump role USAGE on every schema", "schemas", "without USAGE for", grant_audit.schemas,
           grant_audit, evidence)


def test_dump_role_can_select_every_relation(grant_audit: GrantAudit, evidence: Evidence) -> None:
    evidence.cause(READ)  # what pg_dump needs tonight: its failure is the cause of a bad dump
    _judge("dump role SELECT on every relation", "relations", "without SELECT for", grant_audit.relations,
           grant_audit, evidence)


def test_dump_role_can_read_every_sequence(grant_audit: GrantAudit, evidence: Evidence) -> None:
    evidence.cause(READ)  # what pg_dump needs tonight: its failure is the cause of a bad dump
    _judge("dump role USAGE and SELECT on every sequence", "sequences", "without USAGE and/or SELECT for",
           grant_audit.sequences, grant_audit, evidence)


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
