"""A real, throwaway Uptime Kuma for the self-tests and the demo.

The npm package is installed once into a cache directory and reused; every server gets its own
data directory and a free loopback port. The pinned snapshot (`2.0.0-dev.0`) behaves like 1.23
and needs two set-up quirks: its `db/patch-*.sql` files must sit in `db/old_migrations/`, and the
data dir must say `{"type":"sqlite"}` before the first start (else it waits for a set-up wizard).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from pgbackup_verify.locks import FileLock

KUMA_PACKAGE = "uptime-kuma@2.0.0-dev.0"
CACHE_ENV = "PGBV_CACHE"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
INSTALL_TIMEOUT = 900.0


class KumaError(RuntimeError):
    """Kuma could not be installed, started or driven; str() says what to do."""


def cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "pgbackup-verify")
    return Path(base) / "kuma"


def install(cache: Path | None = None) -> Path:
    """Install the pinned Kuma package once (file-locked, atomic rename); return its package dir."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / KUMA_PACKAGE.replace("@", "-")
    pkg = root / "node_modules" / "uptime-kuma"
    with FileLock(cache / ".install.lock", timeout=INSTALL_TIMEOUT):  # xdist, CI: never install twice
        if not (pkg / "server" / "server.js").is_file():
            if shutil.which("npm") is None:
                raise KumaError("npm not found: install Node.js 20 and npm (./dev setup does it)")
            tmp = cache / f".installing-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            proc = subprocess.run(["npm", "install", "--prefix", str(tmp), "--no-audit", "--no-fund",
                                   "--omit=dev", "--loglevel=error", KUMA_PACKAGE],
                                  capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise KumaError(f"npm install {KUMA_PACKAGE} failed (rc {proc.returncode}): "
                                f"{proc.stderr.strip()[-500:]}")
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
        old = pkg / "db" / "old_migrations"
        for patch in (pkg / "db").glob("patch-*.sql"):
            if not (old / patch.name).exists():
                shutil.copy2(patch, old / patch.name)
    return pkg


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when the test process dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gen_token(length: int = 32) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class KumaServer:
    """One running Kuma process; `stop()` (SIGTERM, then SIGKILL) is idempotent."""

    data_dir: Path
    port: int
    package: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "kuma.db"

    def start(self, timeout: float = START_TIMEOUT) -> KumaServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir / "db-config.json"
        if not cfg.exists():
            cfg.write_text('{"type":"sqlite"}')
        env = {**os.environ, "DATA_DIR": str(self.data_dir) + "/", "UPTIME_KUMA_HOST": "127.0.0.1",
               "UPTIME_KUMA_PORT": str(self.port), "NODE_ENV": "production"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["node", "server/server.js"], cwd=self.package, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KumaError(f"Kuma exited with rc {self.proc.returncode} at start; see {self.log_path}: "
                                f"{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                requests.get(self.url, timeout=1, allow_redirects=False)
                return self
            time.sleep(0.2)
        self.stop()
        raise KumaError(f"Kuma did not answer HTTP on {self.url} within {timeout:.0f} s; see {self.log_path}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # graceful: Kuma closes SQLite cleanly in ~4 s
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> KumaServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class KumaAdmin:
    """A logged-in admin client (uptime-kuma-api-ng); reuse one: login is rate-limited to 20/min."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 15.0) -> None:
        from uptime_kuma_api import UptimeKumaApi

        self.api = UptimeKumaApi(url, timeout=timeout, wait_events=0.05)
        if self.api.need_setup():
            self.api.setup(username, password)
        self.api.login(username, password)

    def add_push_monitor(self, name: str, interval: int = 60, parent: int | None = None,
                         maxretries: int = 0, notifications: list[int] | None = None) -> tuple[int, str]:
        """Create an active push monitor; return (id, push token generated by the client)."""
        from uptime_kuma_api import MonitorType

        r = self.api.add_monitor(type=MonitorType.PUSH, name=name, interval=interval, parent=parent,
                                 maxretries=maxretries, notificationIDList=notifications or [])
        mid = int(r["monitorID"])
        return mid, str(self.api.get_monitor(mid)["pushToken"])

    def add_webhook_notification(self, name: str, url: str = "http://127.0.0.1:9/") -> int:
        """A webhook notification (default: a closed local port, so an alert goes nowhere)."""
        from uptime_kuma_api import NotificationType

        r = self.api.add_notification(name=name, type=NotificationType.WEBHOOK, isDefault=False,
                                      applyExisting=False, webhookURL=url, webhookContentType="json")
        return int(r["id"])

    def add_group(self, name: str) -> int:
        from uptime_kuma_api import MonitorType

        return int(self.api.add_monitor(type=MonitorType.GROUP, name=name)["monitorID"])

    def pause(self, monitor_id: int) -> None:
        self.api.pause_monitor(monitor_id)

    def resume(self, monitor_id: int) -> None:
        self.api.resume_monitor(monitor_id)

    def monitors(self) -> list[dict[str, Any]]:
        return list(self.api.get_monitors())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.disconnect()


def push(url: str, token: str, status: str = "up", msg: str = "", ping: int | None = None,
         timeout: float = 5.0) -> dict[str, Any]:
    """One raw push (tests use it to seed heartbeats); returns Kuma's JSON answer."""
    params: dict[str, str] = {"status": status, "msg": msg}
    if ping is not None:
        params["ping"] = str(ping)
    r = requests.get(f"{url}/api/push/{token}", params=params, timeout=timeout)
    return dict(r.json())
