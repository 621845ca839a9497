"""A real OpenSSH server for the remote-target self-tests (Debian's openssh-server).

It runs as root on a free loopback port with its own host key, its own AuthorizedKeysFile holding a
key made here, `UsePAM no`, `StrictModes no`, and lets in one dedicated login user (`LOGIN`, created
here when missing, with /bin/sh as its shell so no rc file of root's slows every command). It runs in a
private mount namespace where `hidden` is a tmpfs holding a copy of `hidden_from`: what is there exists
only for the SSH login, so a check that reads it proves it went through the server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
LOGIN = "pgbv-ssh"


def available() -> str:
    """Why the server cannot run here ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root (sshd, a login user, a private mount namespace)"
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        return "openssh-server and openssh-client are not installed (./dev setup installs them)"
    return ""


def ensure_login_user() -> bool:
    """The login user exists; True when it was created here (the caller removes it)."""
    try:
        pwd.getpwnam(LOGIN)
        return False
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh",
                        "--password", "*",
                        LOGIN], check=True, capture_output=True)
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgbv-selftest", "-f", str(path)],
                   check=True)


@dataclass
class Sshd:
    home: Path  # keys, configs, log (world-traversable: sshd reads authorized_keys as the login user)
    port: int
    proc: subprocess.Popen[bytes]
    hidden: Path

    def ssh_config(self, name: str = "ssh_config", **options: str) -> Path:
        """An ssh_config for this server: its key in a private known_hosts, the test's identity."""
        opts = {"UserKnownHostsFile": str(self.home / "known_hosts"), "GlobalKnownHostsFile": "/dev/null",
                "IdentityFile": str(self.home / "id_ed25519"), "IdentitiesOnly": "yes", **options}
        path = self.home / name
        path.write_text("Host *\n" + "".join(f"  {k} {v}\n" for k, v in opts.items()))
        return path

    def spec(self, config: Path | None = None, port: int | None = None) -> str:
        return f"ssh://{LOGIN}@127.0.0.1:{port or self.port}?ssh_config={config or self.home / 'ssh_config'}"

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        """A command on the server, outside the suite (to look at the remote side)."""
        return subprocess.run(["ssh", "-F", str(self.home / "ssh_config"), "-p", str(self.port),
                               f"{LOGIN}@127.0.0.1", command], capture_output=True, text=True, timeout=60,
                              check=False)

    def sessions(self) -> list[str]:
        """Processes of the login user still running (a session or a command left behind)."""
        res = subprocess.run(["pgrep", "-a", "-u", LOGIN], capture_output=True, text=True, check=False)
        return res.stdout.splitlines()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(home: Path, hidden: Path, hidden_from: Path) -> Sshd:
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    _keygen(home / "host_key")
    _keygen(home / "id_ed25519")
    shutil.copy(home / "id_ed25519.pub", home / "authorized_keys")
    (home / "authorized_keys").chmod(0o644)
    port = free_port()
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {(home / 'host_key.pub').read_text().split(' pgbv')[0]}\n")
    (home / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {home / 'host_key'}
AuthorizedKeysFile {home / 'authorized_keys'}
AllowUsers {LOGIN}
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PidFile none
MaxStartups 100
MaxSessions 100
LogLevel VERBOSE
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    hidden.mkdir(parents=True, exist_ok=True)
    script = ('mount -t tmpfs -o mode=0755 pgbv-remote "$1" && cp -a "$2"/. "$1"/ && '
              'exec "$3" -D -f "$4" -E "$5"')
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                             str(hidden), str(hidden_from), SSHD, str(home / "sshd_config"), str(home / "sshd.log")])
    server = Sshd(home, port, proc, hidden)
    server.ssh_config()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {(home / 'sshd.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("sshd did not listen within 20 s")


def teardown(server: Sshd | None, root: Path, created_user: bool) -> None:
    """Stop the server, remove its tree, and the login user when this run created it."""
    if server is not None:
        server.stop()
    shutil.rmtree(root, ignore_errors=True)
    if created_user:
        subprocess.run(["userdel", LOGIN], check=False, capture_output=True)
