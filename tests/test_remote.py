"""Remote targets: the whole suite against a backup host reached over a real OpenSSH server (tests/sshd.py).

Every host fault of test_host.py and every dump fault of test_dumps.py is built once, on this machine,
and checked twice in ONE run: as a local target and as a remote target (`[target].host = "ssh://..."`)
naming the same paths. Each check must say the same one line both ways. A week of dumps that exists
only inside the server's private mount namespace proves the remote target reads through SSH; a
refused host key and an unreachable host are one line each with their own exit code; nothing is left
on the remote host after a run or a SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sshd
from checkrun import CHECKS, ChecksRun, pytester_env, run_checks
from pgbackup_verify_demo import demo, scene
from test_dumps import _cases as dump_cases
from test_dumps import pg_dump_custom
from test_host import FAULTS, slug

from pgbackup_verify.config import BackupsSection, load_target
from pgbackup_verify.errors import HOST_KEY_REFUSED, HOST_UNREACHABLE, ConfigError
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.dumps.inventory import Inventory, take_inventory
from pgbackup_verify.facts.dumps.remote import take_remote_inventory
from pgbackup_verify.facts.remote import HostKeyRefused, open_host

pytestmark = pytest.mark.skipif(bool(sshd.available()), reason=sshd.available() or "sshd available")

HOST_CHECKS, DUMP_CHECKS = CHECKS / "test_host.py", CHECKS / "test_dumps.py"
AGE = re.compile(r"\d+\.\d h old")  # ages are taken a moment apart (and by each host's clock)


def remote(target: Path, spec: str, name: str) -> Path:
    """A copy of a local target file that reads the same paths on the backup host at `spec`."""
    text = target.read_text().replace('[target]\nname = "', f'[target]\nhost = "{spec}"\nname = "', 1)
    out = target.with_name(f"{name}.toml")
    out.write_text(re.sub(r'\nname = "[^"]*"', f'\nname = "{name}"', text, count=1))
    return out


def fix_owner(path: Path) -> None:
    """Backup directories belong to the SSH login (an SSH login that can read the dumps is all a remote
    target needs); scripts, crontabs and modes stay as each case set them."""
    subprocess.run(["chown", "-R", "--no-dereference", f"{sshd.LOGIN}:", str(path)], check=True)


@dataclass(repr=False)
class Fleet:
    server: sshd.Sshd
    root: Path
    work: Path
    run: ChecksRun
    cases: list[str]
    hidden_dir: Path
    before: str  # the remote tree before the run, as the SSH login lists it


def remote_tree(server: sshd.Sshd, root: Path) -> str:
    """Every file of the cases as the SSH login sees them (size, mtime, mode); the target files the tests
    write beside them, the server's own files and directory mtimes left out."""
    res = server.ssh(f"find {root}/host {root}/dumps {server.hidden} ! -name '*.toml' \\( -type d -printf '%p %m\\n' "
                     "-o -printf '%p %s %T@ %m\\n' \\) | sort")
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(scope="module")
def fleet(seed_cluster: ThrowawayCluster, cluster: ThrowawayCluster, healthy_backups: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    created = sshd.ensure_login_user()
    root = Path(tempfile.mkdtemp(prefix="pgbv-remote-"))  # the login must reach it: not under pytest's 0700 tmp
    root.chmod(0o755)
    work = tmp_path_factory.mktemp("remote-run")
    server = None
    try:
        dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
        running = Path(cluster.executor.datadir)
        targets: list[Path] = []
        local_targets: dict[str, Path] = {}
        for case, inject in {"healthy": None, **{f: i for f, (i, _, _) in FAULTS.items()}}.items():
            d = root / "host" / slug(case)
            h = scene.write_host(d / "host")
            b = d / "backups"
            shutil.copytree(healthy_backups, b)
            fix_owner(b)
            if inject:
                inject(h, b)
            extra = h.toml(running)
            if (h.root / "cron.d").is_dir():
                tabs = [h.crontab, *sorted((h.root / "cron.d").iterdir())]
                extra = extra.replace(f'crontabs = ["{h.crontab}"]', f"crontabs = {[str(t) for t in tabs]!r}")
            local_targets[f"host-{slug(case)}"] = demo.write_target_file(d / "t.toml", dsn, b, name="x", extra=extra)
        custom = root / "custom"
        custom.mkdir()
        made = {"full": pg_dump_custom(seed_cluster, custom / "full.dump"),
                "partial": pg_dump_custom(seed_cluster, custom / "partial.dump", "-n", "public")}
        for case, (d, facts) in dump_cases(root / "dumps", healthy_backups, seed_cluster, made).items():
            if d == healthy_backups:
                d = shutil.copytree(healthy_backups, root / "dumps" / "healthy")
            fix_owner(d)
            t = demo.write_target_file(root / "dumps" / f"{case}.toml", dsn, d, name="x")
            if "pattern" in facts:
                t.write_text(t.read_text().replace('pattern = "directus_*.sql.gz"', f'pattern = "{facts["pattern"]}"'))
            local_targets[f"dump-{case}"] = t
        # A healthy week that only the SSH login can see: staged here, copied into the server's own tmpfs.
        stage = root / "stage"
        shutil.copytree(healthy_backups, stage / "backups")
        fix_owner(stage / "backups")
        hidden = root / "only-remote"
        server = sshd.start(root / "sshd", hidden, stage)
        spec = server.spec()
        for name, t in local_targets.items():
            local = t.with_name(f"local-{name}.toml")
            local.write_text(t.read_text().replace('name = "x"', f'name = "local-{name}"', 1))
            targets += [local, remote(t, spec, f"remote-{name}")]
        only = remote(local_targets["dump-healthy"], spec, "remote-only")
        only.write_text(only.read_text().replace(str(root / "dumps" / "healthy"), str(hidden / "backups")))
        trusting = server.ssh_config("ssh_config_trusting", StrictHostKeyChecking="no",
                                     UserKnownHostsFile="/dev/null")
        off = remote(local_targets["host-healthy"], server.spec(trusting), "remote-keycheck-off")
        targets += [only, off]
        before = remote_tree(server, root)
        run = run_checks(work, targets, [HOST_CHECKS, DUMP_CHECKS], timeout=1200)
        yield Fleet(server, root, work, run, list(local_targets), hidden / "backups", before)
    finally:
        sshd.teardown(server, root, created)


def lines_of(run: ChecksRun, target: str) -> list[tuple[str, str, str]]:
    """Each check's one line; the target's own name (and file name) said as T."""
    return sorted((c["name"], c["outcome"], AGE.sub("N h old", c["message"]).replace(target, "T"))
                  for c in run[target].checks)


def lines(fleet: Fleet, target: str) -> list[tuple[str, str, str]]:
    return lines_of(fleet.run, target)


def test_every_check_says_the_same_line_remotely(fleet: Fleet) -> None:
    assert "Traceback" not in fleet.run.stdout, fleet.run.stdout[-3000:]
    differ = {case: (lines(fleet, f"remote-{case}"), lines(fleet, f"local-{case}")) for case in fleet.cases
              # custom-format archives are read by pg_restore on the backup host only (next test)
              if not case.startswith("dump-custom")}
    differ = {case: [(r, lo) for r, lo in zip(*pair, strict=True) if r != lo] for case, pair in differ.items()}
    assert {case: d for case, d in differ.items() if d} == {}


def test_healthy_remote_target_is_green_and_faults_are_red(fleet: Fleet) -> None:
    fleet.run["remote-host-healthy"].assert_outcomes(passed=10 + 8, skipped=1)  # no custom-format dump
    for fault, (_, failing, _) in FAULTS.items():
        assert fleet.run[f"remote-host-{slug(fault)}"].failed() == set(failing), fault
    assert fleet.run["remote-dump-seed-night"].failed() >= {"test_latest_dump_payload_reaches_minimum"}
    assert ("latest dump payload: FAILED (directus_9999-01-01_0200.sql.gz: 0 bytes decompressed from gzip, "
            "20 bytes on disk") \
        in fleet.run["remote-dump-seed-night"].text


def test_a_custom_format_dump_on_a_remote_host_is_a_finding_not_a_pass(fleet: Fleet) -> None:
    result = fleet.run["remote-dump-custom-full"]
    # Red, never a pass: one check owns the finding (one fault, one red line), the TOC check is not judged.
    assert result.failed() and result.outcome("test_custom_format_toc_lists_expected_schemas") != "passed"
    result.fnmatch_line("*a custom-format archive on a remote host: *on the backup host only*")


def test_dumps_only_the_ssh_login_can_see_are_read_over_ssh(fleet: Fleet) -> None:
    assert not fleet.hidden_dir.exists() or not any(fleet.hidden_dir.iterdir())  # not visible here
    result = fleet.run["remote-only"]
    result.assert_outcomes(passed=8 + 2, skipped=9)  # no [host] section: only dir mode and free space run
    assert f"{fleet.hidden_dir}/directus_" in result.text


def test_host_key_checking_off_is_said_in_every_report(fleet: Fleet) -> None:
    line = fleet.run.facts_line("remote-keycheck-off")
    assert "host key checking: OFF (StrictHostKeyChecking no in its SSH configuration" in line
    assert "host key checking" not in fleet.run.facts_line("remote-host-healthy")
    assert "backup host: ssh://pgbv-ssh@127.0.0.1:" in fleet.run.facts_line("remote-host-healthy")
    html = (fleet.work / "reports" / "latest.html").read_text()
    assert "host key checking" in html and "OFF (StrictHostKeyChecking no" in html


def test_nothing_is_left_on_the_remote_host_after_a_run(fleet: Fleet) -> None:
    assert remote_tree(fleet.server, fleet.root) == fleet.before
    deadline = time.monotonic() + 10
    while fleet.server.sessions() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fleet.server.sessions() == []
    assert not list(Path(tempfile.gettempdir()).glob("pgbv-ssh-*"))  # the control sockets' directories


def one_host_run(fleet: Fleet, tmp_path: Path, spec: str) -> ChecksRun:
    t = remote(fleet.root / "host" / "healthy" / "t.toml", spec, "remote")
    return run_checks(tmp_path, [t], [HOST_CHECKS])


def test_a_refused_host_key_is_one_line_with_its_exit_code(fleet: Fleet, tmp_path: Path) -> None:
    (fleet.server.home / "empty_known_hosts").write_text("")
    config = fleet.server.ssh_config("ssh_config_unknown", UserKnownHostsFile=str(fleet.server.home /
                                                                                   "empty_known_hosts"))
    run = one_host_run(fleet, tmp_path, fleet.server.spec(config))
    assert run.ret == HOST_KEY_REFUSED, run.stdout[-2000:]
    [finding] = {c["message"] for c in run["remote"].checks if c["outcome"] == "error"}
    assert finding.startswith(f"HostKeyRefused: backup host '{fleet.server.spec(config)}': FAILED (SSH host key "
                              "refused: Host key verification failed.); fix: add the host's key")
    assert "\n" not in finding and "Traceback" not in run.stdout


def test_an_unreachable_host_is_one_line_with_its_exit_code(fleet: Fleet, tmp_path: Path) -> None:
    spec = fleet.server.spec(port=sshd.free_port())
    run = one_host_run(fleet, tmp_path, spec)
    assert run.ret == HOST_UNREACHABLE, run.stdout[-2000:]
    [finding] = {c["message"] for c in run["remote"].checks if c["outcome"] == "error"}
    assert re.fullmatch(rf"HostUnreachable: backup host '{re.escape(spec)}': FAILED \(unreachable: .*Connection "
                        r"refused\); fix: check the host name and port in \[target\].host, and that sshd runs there",
                        finding)


def test_paramiko_targets_say_the_same_lines_and_check_host_keys(fleet: Fleet, tmp_path: Path) -> None:
    """testinfra's paramiko backend accepts any host key: the suite compares it with known_hosts itself."""
    spec = fleet.server.spec().replace("ssh://", "paramiko://", 1)
    run = one_host_run(fleet, tmp_path, spec)
    assert run.ret == 0, run.stdout[-2000:]
    assert [(n, o) for n, o, _ in lines_of(run, "remote")] == [(n, o) for n, o, _ in lines(fleet, "local-host-healthy")
                                                             if n in {c["name"] for c in run["remote"].checks}]
    (fleet.server.home / "other_known_hosts").write_text(
        f"[127.0.0.1]:{fleet.server.port} {(fleet.server.home / 'id_ed25519.pub').read_text().split(' pgbv')[0]}\n")
    config = fleet.server.ssh_config("ssh_config_changed", UserKnownHostsFile=str(fleet.server.home /
                                                                                   "other_known_hosts"))
    with pytest.raises(HostKeyRefused, match=r"FAILED \(SSH host key refused: REMOTE HOST IDENTIFICATION HAS CHANGED"):
        open_host(fleet.server.spec(config).replace("ssh://", "paramiko://", 1))


def test_a_remote_target_needs_no_local_backup_dir_but_an_absolute_path(fleet: Fleet, tmp_path: Path) -> None:
    t = remote(fleet.root / "dumps" / "healthy.toml", fleet.server.spec(), "r")
    t.write_text(t.read_text().replace(str(fleet.root / "dumps" / "healthy"), "/nowhere/on/this/machine"))
    assert str(load_target(t).backups.directory) == "/nowhere/on/this/machine"
    t.write_text(t.read_text().replace("/nowhere/on/this/machine", "relative/dir"))
    with pytest.raises(Exception, match=r"\[backups\]\.directory: 'relative/dir' is not an absolute path on the "
                                        r"backup host"):
        load_target(t)


def test_sigterm_leaves_nothing_on_the_remote_host(fleet: Fleet, tmp_path: Path) -> None:
    t = remote(fleet.root / "host" / "healthy" / "t.toml", fleet.server.spec(), "remote")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--target", str(t), str(HOST_CHECKS),
           str(DUMP_CHECKS)]
    before = set(fleet.server.sessions())  # an earlier run's shared connection may still linger
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=pytester_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not set(fleet.server.sessions()) - before and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # until the run talks to the server
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out[-2000:]
    deadline = time.monotonic() + 10
    while fleet.server.sessions() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fleet.server.sessions() == []
    assert remote_tree(fleet.server, fleet.root) == fleet.before


def test_the_whole_suite_is_green_remotely_and_the_drill_restores_the_streamed_dump(fleet: Fleet,
                                                                                    tmp_path: Path) -> None:
    """Every concern on one healthy host, local and remote: both green, the drill's rows the same."""
    healthy = fleet.root / "host" / "healthy" / "t.toml"
    local = healthy.with_name("full-local.toml")
    local.write_text(healthy.read_text().replace('name = "x"', 'name = "full-local"', 1))
    targets = [local, remote(healthy, fleet.server.spec(), "full-remote")]
    run = run_checks(tmp_path, targets, [CHECKS])
    assert run.ret == 0, run.stdout[-3000:]

    def drill(target: str) -> list[str]:
        checks = [c for c in run[target].checks if c["name"] == "test_every_table_has_the_rows_read_from_the_dump"]
        return [f"{k}: {v}" for c in checks for k, v in c["evidence"] if k in ("rows", "rows compared")]

    assert drill("full-remote") == drill("full-local") != []
    assert "on the backup host" in run.facts_line("full-remote") or "on the backup host" in run["full-remote"].text


def test_hostile_entries_are_listed_the_same_remotely(fleet: Fleet, healthy_backups: Path) -> None:
    """FIFOs, links (looping, dangling, to a dump), directories and non-UTF-8 names named like dumps:
    the remote listing classifies them as the local inventory does, and never opens them."""
    d = fleet.root / "hostile"
    shutil.copytree(healthy_backups, d)
    newest = sorted(d.iterdir())[-1]
    os.mkfifo(d / "directus_fifo.sql.gz")
    (d / "directus_loop.sql.gz").symlink_to(d / "directus_loop.sql.gz")
    (d / "directus_gone.sql.gz").symlink_to(d / "nowhere")
    (d / "directus_link.sql.gz").symlink_to(newest)
    (d / "directus_dir.sql.gz").mkdir()
    (d / os.fsdecode(b"directus_\xff.sql.gz")).write_bytes(newest.read_bytes())
    (d / "directus_half.sql.raw").write_bytes(b"partial")
    (d / "directus_zero.sql.gz").touch()
    fix_owner(d)
    backups = BackupsSection(directory=d, pattern="directus_*.sql.gz")
    local = take_inventory(backups, growth_wait=0)
    with_host = open_host(fleet.server.spec())
    try:
        far = take_remote_inventory(with_host.host, backups, growth_wait=0)
    finally:
        with_host.close()
    def shown(inv: Inventory) -> list[tuple[Path, int, int, float]]:
        return [(f.path, f.size, f.mode, round(f.mtime, 3)) for f in inv.dumps]  # find prints mtimes in decimal

    assert shown(far) == shown(local) and far.strays == local.strays and far.in_progress == local.in_progress == ()
    assert len(local.strays) >= 6


@pytest.mark.parametrize(("host", "expected"), [
    ("ssh://backup:secret@db1", "[target].host: contains a password; remove it and log in with a key"),
    ("sftp://db1", "[target].host: 'sftp://' is not a testinfra backend; use local://, ssh://user@host"),
])
def test_host_spec_mistakes_are_one_line(tmp_path: Path, host: str, expected: str) -> None:
    f = tmp_path / "t.toml"
    f.write_text(f'[target]\nhost = "{host}"\n[database]\ndsn = "host=x"\ndump_role = "d"\n'
                 '[backups]\ndirectory = "/var/backups/pg"\n')
    with pytest.raises(ConfigError) as exc:
        load_target(f)
    assert expected in str(exc.value) and "secret" not in str(exc.value) and "\n" not in str(exc.value)
