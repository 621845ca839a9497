"""The concern registry: each concern is a pytest marker, a block of the report and a Kuma routing key."""

from __future__ import annotations

# Concern markers; each maps to a Kuma push monitor in the target file.
CONCERNS = {
    "grants": "privilege checks of the dump role (Kuma: permission guard)",
    "dumps": "checks of the dump files in the backup directory (Kuma: local backup)",
    "drill": "restore drill of the latest dump",
    "kuma": "Uptime Kuma monitor checks",
    "host": "checks of the backup host (cron, scripts, services)",
    "offsite": "checks of the offsite archive",
    "sql": "custom SQL checks declared in the target file ([[sql_check]])",
}
