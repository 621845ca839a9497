"""Every metric the suite writes, named once: the collector, the README table, the alert rules and the
Grafana dashboard are checked against this list (tests/test_metrics.py).

Prometheus conventions: a `pgbackup_verify_` prefix, base units (`_seconds`, `_bytes`), timestamps as
`_timestamp_seconds`, 1/0 gauges for yes/no. Labels are bounded: `target` (a target's name, one per
configured host), `concern` (the concern registry: grants, dumps, drill...), `check` (a check function's
name, plus a [[sql_check]] name): never a file name, a message or other free text.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "pgbackup_verify_"


@dataclass(frozen=True)
class Metric:
    name: str
    labels: tuple[str, ...]
    help: str


def _m(name: str, labels: tuple[str, ...], help_text: str) -> Metric:
    return Metric(PREFIX + name, labels, help_text)


T, TC, TCC = ("target",), ("target", "concern"), ("target", "concern", "check")

RUN_OK = _m("run_ok", (), "1 when every selected check of the run passed (exit 0), else 0")
RUN_EXIT_CODE = _m("run_exit_code", (), "exit code of the run (README: exit codes)")
RUN_TIMESTAMP = _m("run_timestamp_seconds", (), "when the run ended, in seconds since the epoch")
RUN_DURATION = _m("run_duration_seconds", (), "wall time of the run")
RUN_CHECKS = _m("run_checks", ("outcome",), "checks of the run by outcome (passed, failed, error, skipped, not run)")
TARGET_OK = _m("target_ok", T, "1 when every selected check of the target passed, else 0")
CONCERN_OK = _m("concern_ok", TC, "0 when a check of the concern failed, errored, did not run or was not judged "
                                  "because its input is bad; else 1 (OK, partly checked, skipped, not configured)")
CONCERN_STATUS = _m("concern_status", TC, "the concern's status: 0 OK, 1 partly checked, 2 not configured, "
                                          "3 skipped, 4 not judged, 5 failed")
CHECK_PASSED = _m("check_passed", TCC, "1 when the check passed, 0 when it failed, errored, skipped or did not run")
LAST_RUN = _m("last_run_timestamp_seconds", TC, "when a run last judged the concern of the target")
LAST_SUCCESS = _m("last_success_timestamp_seconds", TC, "when a run last found the concern of the target healthy")
DUMP_AGE = _m("dump_age_seconds", T, "age of the newest complete dump")
GOOD_DUMP_AGE = _m("good_dump_age_seconds", T, "age of the newest good dump (complete, payload over the minimum)")
DUMP_PAYLOAD = _m("dump_payload_bytes", T, "decompressed payload of the newest dump")
DRILL_DURATION = _m("drill_duration_seconds", T,
                    "wall time of the restore drill (its wait for another drill's turn not included)")
DRILL_TIER = _m("drill_tier", T, "tier of the drill that ran: 0 schema, 1 sample, 2 full")
DRILL_TABLES = _m("drill_tables_restored", T, "tables the restore drill produced")
DRILL_ROWS = _m("drill_rows_restored", T, "rows the restore drill loaded (0 for a schema drill)")
GRANT_FINDINGS = _m("grant_findings", T, "objects the dump role lacks a privilege on that pg_dump needs")

ALL = (RUN_OK, RUN_EXIT_CODE, RUN_TIMESTAMP, RUN_DURATION, RUN_CHECKS, TARGET_OK, CONCERN_OK, CONCERN_STATUS,
       CHECK_PASSED, LAST_RUN, LAST_SUCCESS, DUMP_AGE, GOOD_DUMP_AGE, DUMP_PAYLOAD, DRILL_DURATION, DRILL_TIER,
       DRILL_TABLES, DRILL_ROWS, GRANT_FINDINGS)
NAMES = frozenset(m.name for m in ALL)

# concern_status values, in outcome.concern_status's words.
STATUS_CODES = {"OK": 0, "PARTLY CHECKED": 1, "NOT CONFIGURED": 2, "SKIPPED": 3, "NOT JUDGED": 4, "FAILED": 5}
