"""The operations sections of a target file: the backup host, the offsite copy, Uptime Kuma and Prometheus.

Same shape as `sections`: frozen dataclasses of documented keys, each with its own validate().
"""

from __future__ import annotations

import difflib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pgbackup_verify.config import trust
from pgbackup_verify.config.concerns import CONCERNS
from pgbackup_verify.config.sections import Section, key
from pgbackup_verify.errors import ConfigError

SHELLCHECK_SEVERITIES = ("error", "warning", "info", "style", "off")


@dataclass(frozen=True)
class HostSection(Section):
    # Paths here live on the backup host (maybe remote), so they are strings, not checked locally.
    cron_jobs: tuple[str, ...] = key("scripts (absolute paths on the host) that cron must run", default=())
    crontabs: tuple[str, ...] = key("crontab files on the host to read (default: root's `crontab -l`, "
                                    "/etc/crontab and /etc/cron.d/*)", default=())
    retired_scripts: tuple[str, ...] = key("globs of retired scripts no active cron entry may run "
                                           "(paths containing '.retired' always count)", default=(), glob="path")
    backup_scripts: tuple[str, ...] = key("backup scripts whose hardening is audited", default=())
    script_owner: str = key("user that must own the backup scripts", default="root")
    shellcheck_severity: str = key("lowest shellcheck severity that fails (error, warning, info, style, off)",
                                   default="warning")
    free_space_multiple: float = key("free space on the backup filesystem must hold this many latest dumps",
                                     default=2.0, gt=0)
    service: str = key("systemd service of the database that must be running", default="")
    container: str = key("docker container of the database that must be running", default="")
    process: str = key("process name (comm) of the database that must be running, e.g. postgres",
                       default="")
    process_args: str = key("text the process's command line must contain, e.g. its data directory",
                            default="")

    def validate(self) -> None:
        if self.shellcheck_severity not in SHELLCHECK_SEVERITIES:
            raise ConfigError(f"[host].shellcheck_severity: '{self.shellcheck_severity}' is not one of "
                              f"{', '.join(SHELLCHECK_SEVERITIES)}")
        for name in ("cron_jobs", "crontabs", "backup_scripts"):
            for p in getattr(self, name):
                if not p.startswith("/"):
                    raise ConfigError(f"[host].{name}: '{p}' is not an absolute path on the host; write it in full")
        if self.process_args and not self.process:
            raise ConfigError("[host].process_args: needs [host].process (the process name) too")


@dataclass(frozen=True)
class OffsiteSection(Section):
    remote: str = key("rclone remote path holding the archives, e.g. gdrive:backups or :local:/srv/offsite")
    archive_glob: str = key("glob of the nightly archives in that path", default="vps-backup-*.tar.gz",
                            glob="name")
    member: str = key("glob of the PostgreSQL dump inside an archive", default="*/postgresql-directus.sql.gz",
                      glob="path")
    max_age_hours: float = key("newest archive must be younger than this", default=26.0, gt=0)
    min_archive_bytes: int = key("newest archive must be at least this big", default=1024, gt=0)
    size_tolerance: float = key("allowed size difference of the member vs the local dump of the same night "
                                "(0.05 = 5%)", default=0.05, ge=0, lt=1)
    rclone: str = key("rclone binary", default="rclone")
    read_timeout_seconds: float = key("wall-clock limit of one archive's read through rclone (the member's "
                                      "decompression included)", default=3600.0, gt=0)

    def validate(self) -> None:
        if ":" not in self.remote:
            raise ConfigError(f"[offsite].remote: '{self.remote}' is not an rclone path; write REMOTE:PATH "
                              "(e.g. gdrive:backups or :local:/srv/offsite)")
        found = shutil.which(self.rclone)
        if found:  # not installed: the offsite checks say so; installed, root runs it
            trust.check_path(Path(found), "[offsite].rclone")


KUMA_MARKERS = tuple(CONCERNS)  # one list of concern markers for the plugin, the report and Kuma


def looks_like_token(name: str) -> bool:
    """Kuma's push tokens are 10-32+ random letters and digits in mixed case; variable names are
    words in one case joined by `_`."""
    return (len(name) >= 10 and "_" not in name and any(c.islower() for c in name)
            and any(c.isupper() for c in name) and any(c.isdigit() for c in name))


@dataclass(frozen=True)
class KumaPushSection:
    monitor: str = key("name of the Kuma push monitor (as shown in Kuma)")
    token_env: str = key("environment variable holding its push token (the token never goes in this file)")
    covers: tuple[str, ...] = key(f"markers ({', '.join(KUMA_MARKERS)}, ...) or check modules (test_grants) "
                                  "it covers")

    def validate(self, where: str) -> None:
        # The value is never echoed: the usual mistake is pasting the push token itself here.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.token_env) or looks_like_token(self.token_env):
            raise ConfigError(f"{where}.token_env: not an environment variable name (it looks like a value; a "
                              "push token is a secret); put the NAME of the variable here, e.g. KUMA_PUSH_LOCAL, "
                              "and the token in the environment")
        if not self.covers:
            raise ConfigError(f"{where}.covers: empty; list the markers or check modules this monitor reports")
        for c in self.covers:
            # Other markers (e.g. a [[sql_check]] concern) are allowed; a near miss of a known one is a
            # typo. An unknown group that matches nothing still pushes DOWN ("no check covering ...").
            close = difflib.get_close_matches(c, KUMA_MARKERS, n=1, cutoff=0.75)
            if c not in KUMA_MARKERS and not c.startswith("test_") and (close or not c.isidentifier()):
                hint = (f"did you mean '{close[0]}'?" if close
                        else f"use a marker ({', '.join(KUMA_MARKERS)}, ...) or test_<module>")
                raise ConfigError(f"{where}.covers: unknown check group '{c}'; {hint}")


@dataclass(frozen=True)
class KumaSection(Section):
    url: str = key("base URL of Uptime Kuma, e.g. http://127.0.0.1:3001")
    push: tuple[KumaPushSection, ...] = key("push monitors fed at the end of every run ([[kuma.push]])",
                                            default=())
    monitors: tuple[str, ...] = key("more monitors (names) the kuma checks must find healthy", default=())
    read: str = key("how the kuma checks read Kuma: 'db' (kuma.db, read-only) or 'socket'", default="")
    db: Path | None = key("Kuma's SQLite file kuma.db, opened read-only (read = 'db')", path="file",
                          default=None)
    username_env: str = key("env var with the Kuma user name (read = 'socket')", default="KUMA_USERNAME")
    password_env: str = key("env var with the Kuma password (read = 'socket')", default="KUMA_PASSWORD")
    grace_seconds: int = key("a monitor's last UP may be this much older than its interval", default=300, ge=0)
    stale_days: float = key("active with no UP for longer than this: stale, advise pausing it", default=7.0,
                            gt=0)
    push_timeout: float = key("seconds per push attempt (one retry)", default=5.0, gt=0)
    read_timeout: float = key("seconds the kuma checks may spend reading kuma.db or the Socket.IO API",
                              default=20.0, gt=0)

    @property
    def read_path(self) -> str:
        """kuma.db when it is given (exact history, no credentials), else the Socket.IO API."""
        return self.read or ("db" if self.db else "socket")

    def validate(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"[kuma].url: '{self.url}' is not an http(s) URL; use e.g. http://127.0.0.1:3001")
        if self.read not in ("", "db", "socket"):
            raise ConfigError(f"[kuma].read: '{self.read}' is neither 'db' nor 'socket'")
        if self.read == "db" and not self.db:
            raise ConfigError("[kuma].db: required when read = 'db'; give the path of kuma.db or use "
                              "read = 'socket'")
        names = [p.monitor for p in self.push]
        for i, p in enumerate(self.push):
            where = f"[kuma.push #{i + 1}]"
            if names.count(p.monitor) > 1:
                raise ConfigError(f"{where}.monitor: '{p.monitor}' is listed twice; keep one entry per monitor")
            p.validate(where)


@dataclass(frozen=True)
class PrometheusSection(Section):
    pushgateway: str = key("base URL of a Prometheus Pushgateway; every run pushes this target's metrics there, "
                           "grouped by job and target", default="")
    job: str = key("the `job` label of the pushed group", default="pgbackup_verify")
    push_timeout: float = key("seconds per push attempt (one retry); a failed push exits 15", default=5.0, gt=0)

    def validate(self) -> None:
        if self.pushgateway and not self.pushgateway.startswith(("http://", "https://")):
            raise ConfigError(f"[prometheus].pushgateway: '{self.pushgateway}' is not an http(s) URL; "
                              "use e.g. http://127.0.0.1:9091")
        if "@" in self.pushgateway.split("//", 1)[-1].split("/", 1)[0]:
            # A password in the URL would end up in logs and reports.
            raise ConfigError("[prometheus].pushgateway: credentials in the URL are refused; put the Pushgateway "
                              "behind a local proxy or allow this host by address")
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", self.job):
            raise ConfigError(f"[prometheus].job: '{self.job}' is not a Prometheus label value of letters, digits "
                              "and '_'; use e.g. pgbackup_verify")
