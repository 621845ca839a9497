"""Exit codes, and the user-facing errors that map to them.

pytest's own codes keep their meaning (0 all passed, 1 a check failed, 2 interrupted,
3 internal error, 4 usage/config error, 5 no check collected). Ours start at 10 so that a
cron wrapper can tell "the backup is bad" (1) from "the suite could not look" (10+).
"""

from __future__ import annotations

OK = 0
CHECKS_FAILED = 1
INTERRUPTED = 2
INTERNAL_ERROR = 3
CONFIG_ERROR = 4
NO_CHECKS = 5
DB_UNREACHABLE = 10
DB_AUTH_FAILED = 11
KUMA_PUSH_FAILED = 12
KUMA_CREDENTIALS_MISSING = 13
LOCK_HELD = 14
HOST_UNREACHABLE = 15
HOST_KEY_REFUSED = 16
HOST_LOGIN_REFUSED = 17
METRICS_NOT_DELIVERED = 18
INVENTORY_INVALID = 19
ANSIBLE_MISSING = 20

EXIT_CODES = {
    OK: "every selected check passed",
    CHECKS_FAILED: "a check failed",
    INTERRUPTED: "the run was interrupted",
    INTERNAL_ERROR: "internal error",
    CONFIG_ERROR: "target file or option invalid",
    NO_CHECKS: "no check was collected or selected, or every selected check skipped",
    DB_UNREACHABLE: "a target database is unreachable",
    DB_AUTH_FAILED: "authentication to a target database failed",
    KUMA_PUSH_FAILED: "a push to Uptime Kuma failed",
    KUMA_CREDENTIALS_MISSING: "Uptime Kuma credentials or push tokens are missing",
    LOCK_HELD: "another run holds the lock",
    HOST_UNREACHABLE: "a remote backup host is unreachable",
    HOST_KEY_REFUSED: "a remote backup host's SSH host key is unknown or changed",
    HOST_LOGIN_REFUSED: "a remote backup host refused the SSH login",
    METRICS_NOT_DELIVERED: "the Prometheus metrics file could not be written or a Pushgateway push failed",
    INVENTORY_INVALID: "the Ansible inventory is missing or unparseable, or a host of it lacks a needed pgbv_ variable",
    ANSIBLE_MISSING: "--inventory or an ansible:// host needs ansible-core, which is not installed",
}


class UserError(Exception):
    """A problem the operator fixes; str() is one line naming the object and what to do."""

    exit_code = CONFIG_ERROR


class ConfigError(UserError):
    """A user mistake in the target file or the options; str() is the one line to show."""

    exit_code = CONFIG_ERROR
