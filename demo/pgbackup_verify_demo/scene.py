"""A seed-shaped backup host laid out in a directory: the nightly scripts, root's crontab (as a file),
and an offsite remote holding `vps-backup-<ts>.tar.gz` archives that carry the PG dump.

Used by the self-tests and the demo, so that the host and offsite checks run against real files,
a real testinfra local backend and a real rclone local remote, without touching the machine's cron.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_MEMBER = "postgresql-directus.sql.gz"
REMOTE_NAME = "offsite"  # an rclone remote defined by environment only: RCLONE_CONFIG_OFFSITE_TYPE=local
RCLONE_ENV = {f"RCLONE_CONFIG_{REMOTE_NAME.upper()}_TYPE": "local"}

PG_BACKUP_SH = """#!/usr/bin/env bash
# Nightly local dump (seed: pg-backup.sh, 02:00 local time).
set -euo pipefail
umask 077
BACKUP_DIR="${BACKUP_DIR:-/opt/incomex/backups/pg}"
BACKUP_FILE="$BACKUP_DIR/directus_$(date +%F_%H%M).sql.gz"
pg_dump --no-owner --no-acl -d directus | gzip -9 > "$BACKUP_FILE"
if [[ $(stat -c %s "$BACKUP_FILE") -lt 1024 ]]; then rm -f "$BACKUP_FILE"; exit 1; fi
gunzip -t "$BACKUP_FILE"
find "$BACKUP_DIR" -name 'directus_*.sql.gz' -mtime +7 -delete
"""

BACKUP_TO_GDRIVE_SH = """#!/bin/bash
# Nightly offsite archive (seed: backup-to-gdrive.sh, 20:00 UTC).
set -euo pipefail
umask 077
STAMP="vps-backup-$(date +%Y%m%d_%H%M%S)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/$STAMP"
pg_dump --no-owner --no-acl -d directus | gzip -9 > "$WORK/$STAMP/postgresql-directus.sql.gz"
tar -C "$WORK" -czf "$WORK/$STAMP.tar.gz" "$STAMP"
rclone copy "$WORK/$STAMP.tar.gz" gdrive:backups
"""


@dataclass
class HostScene:
    root: Path
    scripts: Path
    crontab: Path
    pg_backup: Path
    to_gdrive: Path
    retired: Path

    def toml(self, data_dir: Path | None = None, free_space_multiple: float = 2.0) -> str:
        """The [host] section for this scene; `data_dir` names the running postgres to look for."""
        process = f'process = "postgres"\nprocess_args = "-D {data_dir}"\n' if data_dir else ""
        return (f"\n[host]\ncron_jobs = [\"{self.pg_backup}\", \"{self.to_gdrive}\"]\n"
                f"crontabs = [\"{self.crontab}\"]\nretired_scripts = [\"*/backup.sh.retired.*\"]\n"
                f"backup_scripts = [\"{self.pg_backup}\", \"{self.to_gdrive}\"]\n"
                f"free_space_multiple = {free_space_multiple}\n{process}")


def write_host(root: Path) -> HostScene:
    """Scripts (root-owned, 0755, hardened), a retired script and a crontab that runs the live ones."""
    scripts = root / "scripts"
    scripts.mkdir(parents=True)
    pg, gd = scripts / "pg-backup.sh", scripts / "backup-to-gdrive.sh"
    retired = scripts / "backup.sh.retired.20260408"
    for path, text in ((pg, PG_BACKUP_SH), (gd, BACKUP_TO_GDRIVE_SH), (retired, "#!/bin/sh\nexit 0\n")):
        path.write_text(text)
        path.chmod(0o755)
    crontab = root / "crontab.root"
    crontab.write_text(f"""# root's crontab, as `crontab -l` prints it
SHELL=/bin/bash
MAILTO=""
# S174-FIX-03 archived: 0 2 * * * {retired} >> {root}/backup.log 2>&1
0 2 * * * {pg} >> {root}/pg-backup.log 2>&1
0 20 * * * {gd} >> {root}/backup-to-gdrive.log 2>&1
""")
    return HostScene(root, scripts, crontab, pg, gd, retired)


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o600
    tf.addfile(info, io.BytesIO(data))


def write_archive(remote_dir: Path, dump: Path | None, when: float | None = None,
                  extra: list[tarfile.TarInfo] | None = None, member_bytes: bytes | None = None) -> Path:
    """`vps-backup-<ts>.tar.gz` as the upload job packs it: the PG dump (a copy of `dump`, or
    `member_bytes`, or left out when both are None) next to the other components."""
    when = when or time.time()
    stamp = time.strftime("vps-backup-%Y%m%d_%H%M%S", time.gmtime(when))
    path = remote_dir / f"{stamp}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        dir_info = tarfile.TarInfo(stamp)
        dir_info.type, dir_info.mode, dir_info.mtime = tarfile.DIRTYPE, 0o700, int(when)
        tf.addfile(dir_info)
        if dump is not None:
            tf.add(dump, f"{stamp}/{PG_MEMBER}")  # keeps the dump's mtime: same night, same file
        elif member_bytes is not None:
            _add_bytes(tf, f"{stamp}/{PG_MEMBER}", member_bytes, when)
        # The other components of the seed's archive, incompressible so the archive has a real size.
        _add_bytes(tf, f"{stamp}/uploads.tar", os.urandom(8192), when)
        _add_bytes(tf, f"{stamp}/nginx.conf", b"server { listen 80; }\n", when)
        for info in extra or []:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    os.utime(path, (when, when))
    return path


def offsite_toml(remote_dir: Path, max_age_hours: float = 26, min_archive_bytes: int = 4096,
                 named_remote: bool = True) -> str:
    """The [offsite] section; `named_remote` needs RCLONE_ENV set, else rclone's config-less `:local:`."""
    remote = f"{REMOTE_NAME}:{remote_dir}" if named_remote else f":local:{remote_dir}"
    return (f'\n[offsite]\nremote = "{remote}"\narchive_glob = "vps-backup-*.tar.gz"\n'
            f'member = "*/{PG_MEMBER}"\nmax_age_hours = {max_age_hours}\nmin_archive_bytes = {min_archive_bytes}\n'
            "size_tolerance = 0.05\n")


def write_offsite(root: Path, backup_dir: Path, pattern: str = "directus_*.sql.gz") -> Path:
    """A remote dir with last night's archive, packed an hour after the newest local dump."""
    remote_dir = root / "offsite"
    remote_dir.mkdir(parents=True, exist_ok=True)
    newest = max(backup_dir.glob(pattern), key=lambda p: p.stat().st_mtime)
    write_archive(remote_dir, newest, when=newest.stat().st_mtime + 3600)
    return remote_dir


def demo_sections(root: Path, backup_dir: Path, data_dir: Path | None) -> str:
    """Lay out the host and the offsite remote next to a demo's backups; return the TOML to append
    to its target file (`demo.write_target_file(..., extra=...)`). Needs no rclone config."""
    host = write_host(root / "host")
    remote = write_offsite(root, backup_dir)
    return host.toml(data_dir) + offsite_toml(remote, named_remote=False)
