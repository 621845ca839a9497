"""Children get only what they need: a real run of the checks on the demo host, with a secret planted in
PGPASSWORD and in a Kuma push-token variable, while a thread reads `/proc/PID/environ` of every process
below the run. None may hold the secret (no child outside the restore drill logs in to the target).

The restore drill's children (its own server, initdb, psql) run in the drill's sandbox with their own
environments, proven by tests/test_sandbox.py; this run leaves the drill out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from checkrun import run_checks
from demohost import built_demo
from pgbackup_verify_demo import demo

from pgbackup_verify.facts import childenv

CHECKS = Path(__file__).resolve().parent.parent / "checks"
SECRET = "pgbv-planted-secret-7f3a9c"
KUMA_TOKEN = "pgbv-planted-kuma-token-51be"
# Children that log in to the target themselves and so must see PGPASSWORD: none outside the drill.
NEEDS_PGPASSWORD: frozenset[str] = frozenset()
RCLONE_MARK = ("RCLONE_CONFIG_SPARE_TYPE", "local")  # rclone's own config by environment must still reach it


@dataclass
class Seen:
    name: str
    cmdline: str
    secrets: set[str] = field(default_factory=set)
    env_names: set[str] = field(default_factory=set)


class EnvironSampler:
    """Reads /proc/PID/environ of every descendant of the run (a child of this process) every few ms."""

    def __init__(self, run_marker: str) -> None:
        self.run_marker = run_marker  # in the cmdline of the run itself (which reads the secrets, by design)
        self.seen: dict[tuple[int, str], Seen] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> EnvironSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.samples += 1
            for run in me.children():
                if self._is_run(run):
                    try:
                        below = run.children(recursive=True)
                    except psutil.Error:
                        continue  # the run (or a child) ended while being listed
                    for p in below:
                        self._read(p)
            time.sleep(0.002)

    def _is_run(self, p: psutil.Process) -> bool:
        try:
            return self.run_marker in " ".join(p.cmdline())
        except psutil.Error:
            return False

    def _read(self, p: psutil.Process) -> None:
        try:
            cmdline = " ".join(p.cmdline())
            raw = Path(f"/proc/{p.pid}/environ").read_bytes()
            name = p.name()
        except (OSError, psutil.Error):
            return  # gone already
        if not cmdline or ("python" in name and "-m pytest" in cmdline):
            return  # a fork of the run before its exec: its environ is still the parent's memory
        entry = self.seen.setdefault((p.pid, cmdline), Seen(name, cmdline))
        env = dict(kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)
        entry.env_names |= {k.decode(errors="replace") for k in env}
        entry.secrets |= {s for s in (SECRET, KUMA_TOKEN) if any(s.encode() in v for v in env.values())}


@pytest.fixture(scope="module")
def demo_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.Demo]:
    yield from built_demo(tmp_path_factory, "childenv")


def test_no_child_of_a_real_run_holds_a_planted_secret(demo_host: demo.Demo, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    env = {"PGPASSWORD": SECRET, "KUMA_PUSH_TOKEN_DEMO": KUMA_TOKEN, RCLONE_MARK[0]: RCLONE_MARK[1]}
    checks = [CHECKS / f for f in ("test_grants.py", "test_dumps.py", "test_host.py", "test_offsite.py")]
    with EnvironSampler(str(workdir / "run.json")) as sampler:
        run = run_checks(workdir, [demo_host.target_file], checks, env=env)
    assert run.doc["checks"], run.stdout[-2000:]
    leaks = [s for s in sampler.seen.values() if s.secrets and s.name not in NEEDS_PGPASSWORD]
    print(f"{len(sampler.seen)} child processes seen in {sampler.samples} samples "
          f"({', '.join(sorted({s.name for s in sampler.seen.values()}))}); holding a planted secret: {len(leaks)}")
    assert not leaks, "children holding a planted secret:\n" + "\n".join(
        f"{s.name}: {sorted(s.secrets)} ({s.cmdline[:120]})" for s in leaks)
    names = {s.name for s in sampler.seen.values()}
    # The scan saw the run's children: rclone (offsite) and the host's commands (testinfra's local backend).
    assert "rclone" in names and ({"stat", "find", "df", "sh"} & names), (sampler.samples, sorted(names))
    rclone = [s for s in sampler.seen.values() if s.name == "rclone"]
    assert all(RCLONE_MARK[0] in s.env_names for s in rclone), "rclone lost its own RCLONE_* config"
    assert all("PATH" in s.env_names for s in sampler.seen.values()), "a child without PATH: not an allow-list"


def test_allow_lists() -> None:
    env = {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "PGPASSWORD": SECRET, "PGHOST": "db", "KUMA_TOKEN": KUMA_TOKEN,
           "RCLONE_CONFIG_X_TYPE": "local", "AWS_SECRET_ACCESS_KEY": "k", "SSH_AUTH_SOCK": "/run/a"}
    assert childenv.plain(env) == {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8"}
    assert childenv.pg_client(env=env) == {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "PGHOST": "db"}
    assert childenv.pg_client(password=True, env=env)["PGPASSWORD"] == SECRET
    assert childenv.rclone(env) == {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "RCLONE_CONFIG_X_TYPE": "local"}
    assert childenv.host_backend(env)["SSH_AUTH_SOCK"] == "/run/a"
    childenv.never_pass("RCLONE_CONFIG_X_TYPE")  # a secret read through Secret.from_env, whatever its name
    try:
        assert "RCLONE_CONFIG_X_TYPE" not in childenv.rclone(env)
    finally:
        childenv._never.discard("RCLONE_CONFIG_X_TYPE")
