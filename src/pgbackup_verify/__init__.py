"""pgbackup-verify: prove every day that PostgreSQL backups restore; tell Uptime Kuma the truth."""

__version__ = "0.1.0"
