"""Root's own inputs are judged like sshd and cron judge theirs (config.trust): a target file, a
[database].password_file, an --env-file or the [offsite].rclone binary that another user could change
(writable by its group or others, or owned by someone but root and the running user) is refused with
one line and exit 4; a file with a secret readable by others too. Each attack is made for real (chmod,
chown to `nobody`) and the real `pgbackup-verify` is run over it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from checkrun import pytester_env, write_probe_target

from pgbackup_verify.config import ConfigError, envfile, load_target

NOBODY = 65534


def target(tmp: Path, extra: str = "") -> Path:
    f = write_probe_target(tmp, extra)
    f.chmod(0o644)
    return f


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", *args, "--reports-dir", str(tmp / "reports"),
                           "-p", "no:xdist", "-k", "test_latest_dump_is_younger"], cwd=tmp,
                          env=pytester_env(tmp), capture_output=True, text=True, timeout=120, check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 4 and "Traceback" not in text, (proc.returncode, text)
    return text


@pytest.mark.parametrize(("change", "expected"), [
    (lambda f: f.chmod(0o666), "is writable by its group and others (mode 0666); run: chmod go-w '{f}'"),
    (lambda f: f.chmod(0o646), "is writable by others (mode 0646); run: chmod go-w '{f}'"),
    (lambda f: os.chown(f, NOBODY, -1), "is owned by nobody (uid 65534), not root; run: chown root '{f}'"),
], ids=["world-writable", "other-writable", "foreign-owner"])
def test_a_target_file_others_can_change_is_refused(tmp_path: Path, change, expected: str) -> None:
    f = target(tmp_path)
    assert run(tmp_path, "--target", str(f)).returncode in (0, 1)  # healthy file: the run goes on
    change(f)
    text = one_line(run(tmp_path, "--target", str(f)))
    assert f"target file '{f}' " + expected.format(f=f) in text, text


@pytest.mark.parametrize(("mode", "owner", "expected"), [
    (0o600, 0, None),
    (0o640, 0, None),  # group-readable: a reports or backup group may share it
    (0o644, 0, "holds a secret and is readable by others (mode 0644); run: chmod o-rwx"),
    (0o620, 0, "is writable by its group (mode 0620); run: chmod go-w"),
    (0o600, NOBODY, "is owned by nobody (uid 65534), not root; run: chown root"),
])
def test_a_password_file_is_judged_at_load_and_when_read(tmp_path: Path, mode: int, owner: int,
                                                         expected: str | None) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    t = load_target(target(tmp_path, f'password_file = "{pw}"\n'))
    os.chown(pw, owner, -1)
    pw.chmod(mode)
    if expected is None:
        assert load_target(target(tmp_path, f'password_file = "{pw}"\n')).password() == "s3cret"
        return
    with pytest.raises(ConfigError) as at_load:
        load_target(target(tmp_path, f'password_file = "{pw}"\n'))
    assert f"[database].password_file '{pw}' {expected}" in str(at_load.value)
    with pytest.raises(ConfigError) as at_read:  # changed after the target was loaded: judged again
        t.password()
    assert expected in str(at_read.value) and "s3cret" not in str(at_read.value)


def test_an_env_file_is_read_as_data_and_judged(tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.write_text('# secrets\nPGPASSWORD="Cr0n S3cret $(touch /tmp/pgbv-env-ran)"\nexport KUMA_T=\'a b\'\nEMPTY=\n')
    env.chmod(0o600)
    assert envfile.read(env) == {"PGPASSWORD": "Cr0n S3cret $(touch /tmp/pgbv-env-ran)", "KUMA_T": "a b",
                                 "EMPTY": ""}
    assert not Path("/tmp/pgbv-env-ran").exists()
    f = target(tmp_path)
    assert run(tmp_path, "--target", str(f), "--env-file", str(env)).returncode in (0, 1)
    for change, expected in ((lambda: env.chmod(0o666), "is writable by its group and others (mode 0666)"),
                             (lambda: env.chmod(0o604), "holds a secret and is readable by others (mode 0604)"),
                             (lambda: (env.chmod(0o600), os.chown(env, NOBODY, -1)), "is owned by nobody")):
        change()
        text = one_line(run(tmp_path, "--target", str(f), "--env-file", str(env)))
        assert text == f"pgbackup-verify: --env-file '{env}' {expected}" + text.split(expected, 1)[1], text
        assert "S3cret" not in text
        os.chown(env, 0, -1)
    env.chmod(0o600)
    env.write_text('PGPASSWORD=Cr0n S3cret\n')
    text = one_line(run(tmp_path, "--target", str(f), "--env-file", str(env)))
    assert f"--env-file '{env}' line 1: not KEY=value" in text and "S3cret" not in text, text


def test_an_rclone_binary_others_can_change_is_refused(tmp_path: Path) -> None:
    rclone = tmp_path / "rclone"
    rclone.write_text("#!/bin/sh\necho '[]'\n")
    rclone.chmod(0o755)
    offsite = f'[offsite]\nremote = ":local:{tmp_path}"\nrclone = {json.dumps(str(rclone))}\n'
    f = tmp_path / "o.toml"
    f.write_text(target(tmp_path).read_text() + offsite)
    load_target(f)
    for change, expected in ((lambda: rclone.chmod(0o775), "is writable by its group (mode 0775)"),
                             (lambda: (rclone.chmod(0o755), os.chown(rclone, NOBODY, -1)), "is owned by nobody")):
        change()
        with pytest.raises(ConfigError) as e:
            load_target(f)
        assert f"[offsite].rclone '{rclone}' {expected}" in str(e.value), str(e.value)
        text = one_line(run(tmp_path, "--target", str(f)))
        assert f"[offsite].rclone '{rclone}' {expected}" in text, text
