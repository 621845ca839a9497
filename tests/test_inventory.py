"""Targets from an Ansible inventory (`--inventory FILE`), checked through testinfra's ansible backend.

A real ansible-core parses the inventory (hosts, groups, group and host variables), and every host with
`pgbv_` variables becomes a target whose backup host is `ansible://NAME?ansible_inventory=FILE`. Those
connect to a real OpenSSH server (tests/sshd.py) with the inventory's ansible_host, ansible_port,
ansible_user, ansible_ssh_private_key_file and ansible_ssh_common_args; the dumps they check exist only
inside the server's private mount namespace, so a green run proves they were read over SSH. `--shard K/N`
deals the inventory's hosts out like target files. A missing or unparseable inventory and a host without
a required variable are one line each, naming the file, the host and the variable, with exit 19.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
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
from pgbackup_verify_demo import demo
from test_remote import fix_owner

from pgbackup_verify.config.inventory import InventoryError, load_inventory
from pgbackup_verify.errors import ANSIBLE_MISSING, HOST_KEY_REFUSED, INVENTORY_INVALID
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

pytestmark = [
    pytest.mark.skipif(bool(sshd.available()), reason=sshd.available() or "sshd available"),
    pytest.mark.skipif(importlib.util.find_spec("ansible") is None, reason="ansible-core not installed"),
]

DUMP_CHECKS = CHECKS / "test_dumps.py"
HOSTS = ("db-a", "db-b", "db-c")


@dataclass
class Site:
    server: sshd.Sshd
    root: Path
    inventory: Path
    dsn: str


def inventory_text(server: sshd.Sshd, dsn: str, backups: Path, extra_hosts: str = "") -> str:
    home = server.home
    return f"""# A fleet of three database hosts (one sshd on loopback stands in for each) and a web server.
[pg]
db-a
db-b pgbv_backups_max_age_hours=10000
db-c ansible_ssh_common_args='-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o IdentitiesOnly=yes'
{extra_hosts}
[pg:vars]
ansible_host=127.0.0.1
ansible_port={server.port}
ansible_user={sshd.LOGIN}
ansible_ssh_private_key_file={home / 'id_ed25519'}
ansible_ssh_common_args='-o UserKnownHostsFile={home / 'known_hosts'} -o GlobalKnownHostsFile=/dev/null \
-o IdentitiesOnly=yes'
pgbv_database_dsn="{dsn}"
pgbv_database_dump_role={demo.DUMP_ROLE}
pgbv_backups_directory={backups}
pgbv_backups_pattern={demo.DBNAME}_*.sql.gz
pgbv_backups_min_payload_bytes=10000
pgbv_backups_expected_schemas={sorted(demo.SCHEMAS)!r}

[web]
www ansible_host=127.0.0.1
"""


@pytest.fixture(scope="module")
def site(seed_cluster: ThrowawayCluster, healthy_backups: Path) -> Iterator[Site]:
    created = sshd.ensure_login_user()
    root = Path(tempfile.mkdtemp(prefix="pgbv-inventory-"))  # the login must reach it: not under pytest's tmp
    root.chmod(0o755)
    server = None
    try:
        stage = root / "stage"
        shutil.copytree(healthy_backups, stage / "backups")
        fix_owner(stage / "backups")
        hidden = root / "only-remote"
        server = sshd.start(root / "sshd", hidden, stage)
        dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
        inventory = root / "hosts.ini"
        inventory.write_text(inventory_text(server, dsn, hidden / "backups"))
        yield Site(server, root, inventory, dsn)
    finally:
        sshd.teardown(server, root, created)


def test_each_inventory_host_with_pgbv_variables_is_a_target(site: Site) -> None:
    targets, broken = load_inventory(site.inventory)
    assert broken == []
    assert [t.name for t in targets] == list(HOSTS)  # the web server has no pgbv_ variable: not a target
    a, b, _ = targets
    assert a.host == f"ansible://db-a?ansible_inventory={site.inventory}"
    assert str(a.backups.directory) == str(site.server.hidden / "backups")  # a group variable
    assert (a.backups.max_age_hours, b.backups.max_age_hours) == (26.0, 10000.0)  # a host variable wins
    assert a.backups.expected_schemas == tuple(sorted(demo.SCHEMAS))  # a list, as Ansible's INI parser reads it
    assert a.database.dsn == site.dsn and a.database.dump_role == demo.DUMP_ROLE


def run_shard(site: Site, tmp: Path, shard: str) -> ChecksRun:
    return run_checks(tmp, [], [DUMP_CHECKS], "--inventory", str(site.inventory), "--shard", shard)


def test_sharded_inventory_runs_read_the_dumps_over_ssh_and_split_the_fleet(site: Site, tmp_path: Path) -> None:
    assert not any(site.server.hidden.iterdir())  # the dumps exist only for the SSH login
    runs = [run_shard(site, tmp_path / str(k), f"{k}/2") for k in (1, 2)]
    for run in runs:
        assert run.ret == 0, run.stdout[-3000:]
        assert "Traceback" not in run.stdout
    first, second = (r.targets() for r in runs)
    assert first | second == set(HOSTS) and not first & second and {len(first), len(second)} == {1, 2}
    by_name = {t: r for r in runs for t in r.targets()}
    for name in HOSTS:
        assert f"{site.server.hidden}/backups/{demo.DBNAME}_" in by_name[name][name].text
        line = by_name[name].facts_line(name)
        assert f"backup host: ansible://{name}?ansible_inventory={site.inventory}" in line
    # db-c's own ansible_ssh_common_args turn host key checking off: every report says so.
    assert "host key checking: OFF (StrictHostKeyChecking no" in by_name["db-c"].facts_line("db-c")
    assert "host key checking" not in by_name["db-a"].facts_line("db-a")
    deadline = time.monotonic() + 10
    while site.server.sessions() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert site.server.sessions() == []  # the shared connections were closed
    assert not list(Path(tempfile.gettempdir()).glob("pgbv-ssh-*"))


def pgbv(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pgbackup-verify ARGS` as cron runs it (the dump checks only, reports under tmp)."""
    return subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", "--reports-dir", str(tmp / "reports"),
                           "-p", "no:xdist", *args, str(DUMP_CHECKS)], cwd=tmp, env=pytester_env(tmp),
                          capture_output=True, text=True, timeout=300, check=False)


def test_an_unknown_host_key_through_the_inventory_is_refused_with_its_exit_code(site: Site, tmp_path: Path) -> None:
    (site.server.home / "empty_known_hosts").write_text("")
    inv = tmp_path / "keys.ini"
    inv.write_text(site.inventory.read_text().replace(str(site.server.home / "known_hosts"),
                                                      str(site.server.home / "empty_known_hosts")))
    run = run_checks(tmp_path / "run", [], [DUMP_CHECKS], "--inventory", str(inv), "-k", "db-a")
    assert run.ret == HOST_KEY_REFUSED, run.stdout[-3000:]
    findings = {c["message"] for c in run["db-a"].checks if c["outcome"] == "error"}
    assert findings and all(f.startswith(f"HostKeyRefused: backup host 'ansible://db-a?ansible_inventory={inv}': "
                                          "FAILED (SSH host key refused: Host key verification failed.)")
                            for f in findings), findings


@pytest.mark.parametrize(("text", "expected"), [
    (None, "inventory '{inv}' does not exist; pass an existing Ansible inventory to --inventory"),
    ("[pg\ndb-a\n", "inventory '{inv}': Ansible cannot parse it (Failed to parse inventory: "),
    ("db-a pgbv_database_dump_role=x pgbv_backups_directory=/b\n",
     "inventory '{inv}', host 'db-a': pgbv_database_dsn ([database].dsn): required key is missing; add it"),
    ("db-a pgbv_database_dsn=host=x pgbv_database_dump_role=x pgbv_backup_dir=/b\n",
     "inventory '{inv}', host 'db-a': pgbv_backup_dir: not a target key; did you mean pgbv_backups_...?"),
    ('db-a pgbv_database_dsn="host={{ ansible_host }}" pgbv_database_dump_role=x pgbv_backups_directory=/b\n',
     "inventory '{inv}', host 'db-a': pgbv_database_dsn: is a Jinja template"),
    ("www ansible_host=127.0.0.1\n", "inventory '{inv}' has no host with a pgbv_ variable; set at least"),
    ("0666", "inventory '{inv}' is writable by its group and others (mode 0666); run: chmod go-w '{inv}'"),
])
def test_inventory_mistakes_are_one_line_with_exit_19(tmp_path: Path, text: str | None, expected: str) -> None:
    inv = tmp_path / "hosts.ini"
    if text == "0666":
        inv.write_text("db-a pgbv_database_dsn=host=x pgbv_database_dump_role=x pgbv_backups_directory=/b\n")
        inv.chmod(0o666)
    elif text is not None:
        inv.write_text(text)
    with pytest.raises(InventoryError) as exc:
        _, broken = load_inventory(inv)
        if broken:
            raise InventoryError(broken[0].error)
    assert str(exc.value).startswith(expected.format(inv=inv)), str(exc.value)
    assert "\n" not in str(exc.value)
    res = pgbv(tmp_path, "--inventory", str(inv))
    assert res.returncode == INVENTORY_INVALID, res.stdout[-2000:] + res.stderr[-2000:]
    assert expected.format(inv=inv) in res.stderr and "Traceback" not in res.stderr + res.stdout
    assert "NOT CHECKED" in (tmp_path / "reports" / "latest.html").read_text()


def test_a_broken_host_fails_alone_and_the_others_are_checked(site: Site, tmp_path: Path) -> None:
    inv = tmp_path / "mixed.ini"
    inv.write_text(site.inventory.read_text().replace("db-c ansible_ssh",
                                                      "db-c pgbv_backups_directory=relative/dir ansible_ssh"))
    run = run_checks(tmp_path / "run", [], [DUMP_CHECKS], "--inventory", str(inv))
    assert run.ret == INVENTORY_INVALID, run.stdout[-3000:]
    assert run["db-a"].failed() == run["db-b"].failed() == set() and run["db-a"].outcome(
        "test_latest_dump_payload_reaches_minimum") == "passed"
    [finding] = [c["message"] for c in run["db-c"].checks if c["outcome"] != "passed"]
    line = (f"inventory '{inv}', host 'db-c': pgbv_backups_directory ([backups].directory): 'relative/dir' is not "
            "an absolute path on the backup host")
    assert line in finding
    # A shard holding only the broken host: nothing to check, the same line and exit code.
    res = pgbv(tmp_path, "--inventory", str(inv), "--shard", "3/3")
    assert res.returncode == INVENTORY_INVALID and line in res.stderr, res.stdout[-2000:] + res.stderr[-2000:]


@pytest.mark.parametrize("kind", ["ssh", "ansible"])
def test_init_writes_a_target_for_a_remote_host_from_what_it_reads_there(site: Site, tmp_path: Path,
                                                                          kind: str) -> None:
    """`init --host`: the dumps exist only for the SSH login; init lists and reads them there, and the file
    it writes names the host and passes the dump checks as it is."""
    spec = site.server.spec() if kind == "ssh" else f"ansible://db-a?ansible_inventory={site.inventory}"
    out = tmp_path / "db1.toml"
    backups = site.server.hidden / "backups"
    res = subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", "init", str(out), "--dsn", site.dsn,
                          "--backups", str(backups), "--host", spec], cwd=tmp_path, env=pytester_env(tmp_path),
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text()
    assert f"host = {json.dumps(spec)}" in text and f'directory = "{backups}"' in text
    assert f'pattern = "{demo.DBNAME}_*.sql.gz"' in text and "guessed from the 7 file(s)" in text
    if kind == "ssh":
        run = run_checks(tmp_path / "run", [out], [DUMP_CHECKS])
        assert run.ret == 0, run.stdout[-3000:]
    res = subprocess.run([sys.executable, "-m", "pgbackup_verify.cli", "init", str(tmp_path / "x.toml"), "--dsn",
                          site.dsn, "--backups", "relative", "--host", spec], cwd=tmp_path,
                         env=pytester_env(tmp_path), capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 4 and res.stderr.strip() == (
        f"pgbackup-verify init: --backups: 'relative' is not an absolute path on the backup host ({spec}); "
        "write it in full")


def test_yaml_inventory_tables_lists_and_group_precedence(tmp_path: Path) -> None:
    """A whole table as a mapping, [[kuma.push]] as a list, child groups: merged the Ansible way."""
    inv = tmp_path / "fleet.yml"
    inv.write_text("""all:
  children:
    databases:
      vars:
        pgbv_database: {dsn: "host=pg dbname=app", dump_role: backup}
        pgbv_backups_directory: /var/backups/pg
      children: {europe: {}}
    europe:
      vars: {pgbv_backups_max_age_hours: 30}
      children:
        paris:
          hosts:
            db1:
              pgbv_target_name: paris-db1
              pgbv_database_dump_role: paris_backup
              pgbv_kuma_url: "http://127.0.0.1:3001"
              pgbv_kuma_push: [{monitor: "PG db1", token_env: KUMA_PUSH_DB1, covers: [dumps]}]
    web:
      hosts: {www: {ansible_host: 127.0.0.1}}
""")
    [t], broken = load_inventory(inv)
    assert broken == []
    assert (t.name, t.host) == ("paris-db1", f"ansible://db1?ansible_inventory={inv}")
    assert (t.database.dsn, t.database.dump_role) == ("host=pg dbname=app", "paris_backup")  # the key wins
    assert t.backups.max_age_hours == 30.0 and str(t.backups.directory) == "/var/backups/pg"
    assert t.kuma is not None and [(p.monitor, p.token_env, p.covers) for p in t.kuma.push] == [
        ("PG db1", "KUMA_PUSH_DB1", ("dumps",))]


def test_without_ansible_core_an_inventory_is_one_line_and_exit_20(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("db-a pgbv_database_dsn=host=x pgbv_database_dump_role=x pgbv_backups_directory=/b\n")
    # Python's own way to make a package unimportable in one process: no install is touched.
    code = ("import sys; sys.modules['ansible'] = None; from pgbackup_verify.cli import main; "
            f"sys.exit(main(['--inventory', {str(inv)!r}, '--reports-dir', {str(tmp_path / 'r')!r}]))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=pytester_env(tmp_path),
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == ANSIBLE_MISSING, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stderr.strip() == (f"pgbackup-verify: inventory '{inv}': needs ansible-core, which is not installed; "
                                  "install it with pip install 'pgbackup-verify[ansible]' (or pip install "
                                  "ansible-core)")
