"""One fault, one red line: which check owns which fault, written down once.

A fault is judged by the one check that owns it; that check fails with the finding and the fix.
Every other check that sees only a consequence of it (the drill of an empty dump, the shrink of a cut
one, the night the empty dump leaves uncovered) skips as "not judged: <the owner's finding>"
(evidence.Upstream: the owner records its finding under a key, the later check asks for the key).
Checks run in the order of cause (outcome.CAUSE_ORDER, then file order within a concern), so an owner
always reports before the checks that defer to it.

OWNERS below is the table the checks and the self-tests share: tests/test_ownership.py holds it
against the checks, tests/test_fix_texts.py injects every fault and expects exactly its owner red
(plus declared causes in an earlier concern, e.g. the grant that made the dump empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Upstream keys (evidence.Evidence.cause / require_upstream).
GRANTS_READ = "grants.read"  # the dump role can read everything pg_dump reads tonight
DUMP_AGE = "dumps.age"  # the newest dump is recent enough (the nights after it are its owner's)
NIGHTS = "dumps.nights"  # every night of the retention window holds a good dump


def dump_key(path: Path | str) -> str:
    """This dump file is whole and holds what it should: the key of every check that reads its content."""
    return f"dump {path}"


def restore_key(path: Path | str) -> str:
    """The drill restored this dump without an error (the later drill checks of it read what it restored)."""
    return f"restore {path}"


def schemas_key(path: Path | str) -> str:
    """The drill's restore of this dump holds every expected schema."""
    return f"schemas {path}"


def read_key(path: Path | str) -> str:
    """The user running the checks can read this dump file."""
    return f"read {path}"


@dataclass(frozen=True)
class Owner:
    fault: str  # the fault in words
    check: str  # the check (test function) that fails with it
    keys: tuple[str, ...] = ()  # what its failure vouches for downstream ("{path}": per dump file)
    defers: tuple[str, ...] = ()  # keys whose failure this check leaves to their owner: "not judged"


_DUMP, _RESTORE, _SCHEMAS = dump_key("{path}"), restore_key("{path}"), schemas_key("{path}")
_CONTENT = (_DUMP,)
OWNERS: tuple[Owner, ...] = (
    Owner("the dump role cannot log in or connect", "test_dump_role_can_connect", (GRANTS_READ,)),
    Owner("a schema without USAGE for the dump role", "test_dump_role_has_usage_on_every_schema", (GRANTS_READ,)),
    Owner("a table the dump role cannot read", "test_dump_role_can_select_every_relation", (GRANTS_READ,)),
    Owner("a sequence the dump role cannot read", "test_dump_role_can_read_every_sequence", (GRANTS_READ,)),
    Owner("a large object the dump role cannot read", "test_dump_role_can_read_every_large_object", (GRANTS_READ,)),
    Owner("another owner's future objects not granted", "test_default_privileges_cover_future_objects"),
    Owner("a local pg_dump older than the server", "test_local_pg_dump_not_older_than_server"),
    # The newest dump: the first content check that finds it bad owns it, in this order (checks/test_dumps.py).
    Owner("no dump younger than [backups].max_age_hours", "test_latest_dump_is_younger_than_max_age", (DUMP_AGE,)),
    Owner("the newest dump is cut or damaged", "test_latest_dump_gzip_stream_is_valid", _CONTENT, _CONTENT),
    Owner("the newest dump is empty or too small", "test_latest_dump_payload_reaches_minimum", _CONTENT, _CONTENT),
    Owner("the newest dump is incomplete (no header or footer)", "test_latest_dump_has_pg_dump_header_and_footer",
          _CONTENT, _CONTENT),
    Owner("the newest dump shrank beyond [backups].max_shrink_ratio",
          "test_payload_did_not_shrink_beyond_allowed_ratio", _CONTENT, _CONTENT),
    Owner("an older night without a good dump", "test_no_night_missing_in_retention_window", (NIGHTS,),
          (DUMP_AGE, _DUMP)),
    Owner("rotation keeps too few good dumps", "test_enough_good_dumps_kept", (), (DUMP_AGE, _DUMP, NIGHTS)),
    Owner("a stray partial file", "test_no_stray_partial_artifacts", (), (_DUMP,)),
    Owner("a schema missing from a -Fc dump's TOC", "test_custom_format_toc_lists_expected_schemas", _CONTENT,
          (GRANTS_READ,)),
    # The drill of the newest dump: what it finds wrong is the dump's content too.
    # Objects of a schema missing whole are the schema check's; what else is missing, the table and object checks'.
    Owner("the drill could not restore the dump cleanly", "test_restore_finished_without_errors", (_RESTORE,),
          _CONTENT),
    Owner("a schema missing after the restore", "test_every_expected_schema_is_restored", (_SCHEMAS,),
          (_DUMP, _RESTORE, GRANTS_READ)),
    Owner("too few tables after the restore", "test_table_count_per_schema_meets_expectation", (),
          (_DUMP, _RESTORE, _SCHEMAS, GRANTS_READ)),
    Owner("sequences, views or functions missing after the restore", "test_sequences_views_functions_are_restored",
          (), (_DUMP, _RESTORE, _SCHEMAS)),
    Owner("a table with fewer rows than the dump holds", "test_every_table_has_the_rows_read_from_the_dump",
          (), (_DUMP, _RESTORE)),
    Owner("a large object missing after the restore", "test_every_large_object_is_restored", (), (_DUMP, _RESTORE)),
    Owner("the drill left a database, cluster or file behind", "test_drill_left_nothing_behind"),
    Owner("no full drill within [drill].full_every_days", "test_last_full_drill_is_recent_enough"),
    # The offsite copy (its own chain listing -> read -> member -> complete: checks/test_offsite.py).
    Owner("no fresh offsite archive", "test_newest_offsite_archive_is_fresh_and_big_enough"),
    Owner("an unreadable or hostile offsite archive", "test_offsite_archive_holds_no_hostile_member"),
    Owner("no PG dump in the offsite archive", "test_offsite_archive_contains_the_pg_dump"),
    Owner("the offsite PG dump is empty or cut", "test_offsite_pg_dump_is_complete"),
    Owner("the offsite PG dump differs from the local one", "test_offsite_pg_dump_matches_the_local_dump", (),
          (DUMP_AGE, _DUMP, _RESTORE, _SCHEMAS)),
    # Cron: a line cron will not run as written is the line check's; the job check names only absent jobs.
    Owner("a cron line cron will not run as written", "test_cron_runs_every_line_as_written"),
    Owner("a backup job no cron line runs", "test_cron_schedules_every_backup_job"),
    Owner("a failing custom SQL check", "test_custom_sql_check"),
)

BY_CHECK: dict[str, Owner] = {o.check: o for o in OWNERS}

# Causes across concerns: a finding under the first key explains one under the second ("likely
# cause: grants · ..." on the dump's line). Only for faults one really causes: the dump role that
# cannot read a schema makes pg_dump fail, and the newest dump is empty, cut or shrunk.
CAUSES: tuple[tuple[str, str], ...] = ((GRANTS_READ, _DUMP),)
CAUSES_BY_KEY: dict[str, tuple[str, ...]] = {c: tuple(e for k, e in CAUSES if k == c) for c, _ in CAUSES}


def owner_of(check: str) -> Owner | None:
    return BY_CHECK.get(check)


def causes_of(key: str) -> list[str]:
    """The upstream keys whose failure likely explains a failure under `key` (a dump key: per path)."""
    generic = _DUMP if key.startswith(dump_key("")) else key
    return [cause for cause, effect in CAUSES if effect == generic]
