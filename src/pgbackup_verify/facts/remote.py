"""Remote backup hosts through testinfra's own backends (ssh, paramiko, ansible...), never an SSH layer of ours.

A target names its backup host with a testinfra host spec (`ssh://backup@db1?ssh_config=FILE&ssh_identity_file=KEY`).
This module adds only what an unattended nightly run needs on top of the backend it picks:
- OpenSSH never prompts (`BatchMode=yes`): a missing key or passphrase fails at once instead of hanging cron;
- host keys are checked the usual way (known_hosts, `~/.ssh/config` or the spec's `ssh_config`); when the
  target's own SSH configuration turns checking off, `key_checking_off` says so, for every report;
- consecutive commands share one SSH connection (OpenSSH's ControlMaster, socket in a private directory,
  closed by `RemoteHost.close`), so the dozens of small commands of the host checks and the chunked dump
  reads (facts/dumps/remote.py) do not each pay a handshake;
- a connection that fails is one line with its own exit code: unreachable (15), host key refused (16),
  login refused (17).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import tempfile
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import testinfra

from pgbackup_verify.config.sections import host_scheme as scheme
from pgbackup_verify.config.sections import is_remote
from pgbackup_verify.errors import HOST_KEY_REFUSED, HOST_LOGIN_REFUSED, HOST_UNREACHABLE, ConfigError, UserError
from pgbackup_verify.facts import childenv

Host = Any  # testinfra.host.Host

__all__ = ["HostKeyRefused", "HostLoginRefused", "HostUnreachable", "RemoteHost", "is_remote", "key_checking_off",
           "open_host", "scheme", "shown_spec"]
CONTROL_PERSIST_S = 30  # idle seconds before OpenSSH's master exits by itself (close() ends it at once)
_KEY_MARKERS = ("host key verification failed", "remote host identification has changed",
                "host key is known", "not found in known_hosts", "badhostkey", "host key for")
_LOGIN_MARKERS = ("permission denied", "authentication failed", "too many authentication failures",
                  "no more authentication methods")


class HostUnreachable(UserError):
    """The backup host could not be reached; str() names the spec and the fix."""

    exit_code = HOST_UNREACHABLE


class HostKeyRefused(HostUnreachable):
    exit_code = HOST_KEY_REFUSED


class HostLoginRefused(HostUnreachable):
    exit_code = HOST_LOGIN_REFUSED


def shown_spec(spec: str) -> str:
    """The spec without a password (`ssh://user:pw@host` is testinfra syntax, and never printed)."""
    parts = urllib.parse.urlsplit(spec)
    if parts.password is None:
        return spec
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _query(spec: str) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(spec).query).items()}


def _ssh_options(spec: str) -> list[str]:
    """`ssh` arguments that pick the same configuration as testinfra's ssh backend does for `spec`."""
    parts, query = urllib.parse.urlsplit(spec), _query(spec)
    args = []
    if "ssh_config" in query:
        args += ["-F", os.path.expanduser(query["ssh_config"])]
    if parts.username:
        args += ["-o", f"User={parts.username}"]
    if parts.port:
        args += ["-o", f"Port={parts.port}"]
    return [*args, parts.hostname or ""]


def _paramiko_config(spec: str) -> dict[str, Any]:
    """What paramiko reads for this host from the spec's ssh_config (else ~/.ssh/config), as testinfra does."""
    import paramiko  # type: ignore[import-untyped]  # only for paramiko:// targets (the `ssh` extra)

    path = _query(spec).get("ssh_config") or os.path.expanduser("~/.ssh/config")
    try:
        with open(os.path.expanduser(path)) as f:
            config = paramiko.SSHConfig()
            config.parse(f)
    except OSError:
        return {}
    return dict(config.lookup(urllib.parse.urlsplit(spec).hostname or ""))


def check_paramiko_host_key(spec: str, host: Host) -> None:
    """testinfra's paramiko backend loads no known_hosts and accepts any host key (paramiko's WarningPolicy):
    compare the key of the connection it made with the known_hosts file (UserKnownHostsFile of its ssh_config,
    else ~/.ssh/known_hosts) before any check runs there. Only `true` ran before this; no password is sent
    when the login is by key, as it should be for an unattended run."""
    import paramiko

    cfg = _paramiko_config(spec)
    if cfg.get("stricthostkeychecking") == "no":
        return
    parts = urllib.parse.urlsplit(spec)
    name = cfg.get("hostname") or parts.hostname or ""
    port = int(parts.port or cfg.get("port") or 22)
    known_files = cfg.get("userknownhostsfile") or "~/.ssh/known_hosts"
    known = paramiko.HostKeys()
    for f in known_files.split():
        if os.path.exists(os.path.expanduser(f)):
            known.load(os.path.expanduser(f))
    client = host.backend.client
    key = client.get_transport().get_remote_server_key()
    entry = name if port == 22 else f"[{name}]:{port}"
    listed = known.lookup(entry)
    why = ""
    if listed is None or key.get_name() not in listed:
        why = f"host key for {entry} not found in known_hosts ({known_files})"
    elif listed[key.get_name()] != key:
        why = f"REMOTE HOST IDENTIFICATION HAS CHANGED for {entry} (known_hosts: {known_files})"
    if why:
        client.close()
        raise _classified(spec, why)


def _backend_ssh_options(backend: Any) -> list[str]:
    """`ssh` arguments that address the same host with the same configuration as testinfra's ssh backend
    `backend` does (its extra arguments included: an inventory's ansible_ssh_common_args, say)."""
    args = shlex.split(backend.ssh_extra_args or "")
    if backend.ssh_config:
        args += ["-F", os.path.expanduser(backend.ssh_config)]
    if backend.host.user:
        args += ["-o", f"User={backend.host.user}"]
    if backend.host.port:
        args += ["-o", f"Port={backend.host.port}"]
    return [*args, backend.host.name]


def _transport_spec(backend: Any) -> str:
    """A host spec of the backend that runs the commands (what testinfra's ansible backend resolved)."""
    h = backend.host
    spec = f"{backend.NAME}://{h.user + '@' if h.user else ''}{h.name}{':' + str(h.port) if h.port else ''}"
    config = getattr(backend, "ssh_config", None)
    return f"{spec}?ssh_config={config}" if config else spec


def key_checking_off(spec: str, ssh_args: list[str] | None = None) -> str:
    """Why host keys are NOT checked for this host ("" when they are): the effective OpenSSH setting
    (`ssh -G`, which reads the same files ssh itself will) or the paramiko backend's ssh_config.
    `ssh_args`: the ssh options of the connection, when the spec alone does not say them (ansible://)."""
    kind = scheme(spec)
    if kind == "paramiko" and _paramiko_config(spec).get("stricthostkeychecking") == "no":
        return "StrictHostKeyChecking no in its SSH configuration: a changed host key goes unnoticed"
    if kind in ("ssh", "safe-ssh"):
        try:
            res = subprocess.run(["ssh", "-G", *(ssh_args or _ssh_options(spec))], capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        for line in res.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == "stricthostkeychecking" and value.strip() in ("false", "no", "off"):
                return "StrictHostKeyChecking no in its SSH configuration: a changed host key goes unnoticed"
    return ""


@dataclass
class RemoteHost:
    """A testinfra host plus what was set up for it (OpenSSH's control socket directory)."""

    spec: str
    host: Host
    control_dir: str = ""
    # The host whose backend runs the commands: testinfra's ansible backend hands each one to the
    # ssh/paramiko/local... host it resolved from the inventory; None: `host` itself.
    transport: Host | None = None

    @property
    def transport_spec(self) -> str:
        return _transport_spec(self.transport.backend) if self.transport is not None else self.spec

    def ssh_args(self) -> list[str]:
        return _backend_ssh_options(self.transport.backend) if self.transport is not None else _ssh_options(self.spec)

    def key_checking_off(self) -> str:
        return key_checking_off(self.transport_spec, self.ssh_args() if self.transport is not None else None)

    def close(self) -> None:
        """End the shared SSH connection now (not CONTROL_PERSIST_S later) and remove its directory."""
        if scheme(self.transport_spec) == "paramiko":
            (self.transport or self.host).backend.client.close()
        if not self.control_dir:
            return
        socket = os.path.join(self.control_dir, "master")
        if os.path.exists(socket):
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", *self.ssh_args()],
                           capture_output=True, timeout=10, check=False)
        shutil.rmtree(self.control_dir, ignore_errors=True)
        self.control_dir = ""


def _classified(spec: str, why: str) -> HostUnreachable:
    low = why.lower()
    shown = shown_spec(spec)
    if any(m in low for m in _KEY_MARKERS):
        return HostKeyRefused(f"backup host '{shown}': FAILED (SSH host key refused: {why}); fix: add the host's key "
                              "to the known_hosts file its SSH configuration names (ssh-keyscan, checked against "
                              "the host's own fingerprint), or correct [target].host")
    if any(m in low for m in _LOGIN_MARKERS):
        return HostLoginRefused(f"backup host '{shown}': FAILED (SSH login refused: {why}); fix: install the "
                                "verification host's public key for that user, or name the key with "
                                "ssh_identity_file in [target].host")
    where = ("the inventory's ansible_host and ansible_port of that host" if scheme(spec) == "ansible"
             else "[target].host")
    return HostUnreachable(f"backup host '{shown}': FAILED (unreachable: {why}); fix: check the host name and "
                           f"port in {where}, and that sshd runs there")


def _why(e: BaseException) -> str:
    # testinfra's ssh backend raises RuntimeError(CommandResult) when ssh itself fails (exit 255).
    result = e.args[0] if e.args else None
    text = str(getattr(result, "stderr", "") or e or type(e).__name__).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("@@@", "Warning:"))]
    # OpenSSH puts the decisive sentence last ("Host key verification failed.").
    return (lines[-1] if lines else type(e).__name__)[:300]


def _ansible_transport(spec: str, host: Host, control_dir: str) -> Host:
    """The host testinfra's ansible backend runs this target's commands on, resolved from the inventory
    the way that backend does (ansible_host, ansible_user, ansible_port, ansible_ssh_private_key_file,
    ansible_ssh_common_args...), made as unattended as an ssh:// target: BatchMode, one shared connection,
    children without the run's secrets."""
    from testinfra.utils.ansible_runner import AnsibleRunner

    from pgbackup_verify.config.inventory import InventoryError, parse

    backend = host.backend
    shown = shown_spec(spec)
    if backend.force_ansible:
        raise ConfigError(f"[target].host: '{shown}' sets force_ansible, which runs every command as an Ansible "
                          "module (no streaming of dumps); remove it")
    inventory = backend.ansible_inventory
    runner = AnsibleRunner.get_runner(inventory)
    if inventory and "inventory" not in vars(runner):
        # testinfra would run `ansible-inventory` found on PATH with this run's environment: hand it the
        # inventory read by the same interpreter's ansible-core with a plain environment instead (its
        # cached `inventory`; a testinfra without it just reads the file itself).
        vars(runner)["inventory"] = parse(Path(inventory))
    if backend.host not in runner.get_hosts("all"):
        raise InventoryError(f"[target].host: '{shown}': host '{backend.host}' is not in inventory "
                             f"'{inventory or 'the default Ansible inventory'}'; add it or correct the name")
    transport = runner.get_host(backend.host, ssh_config=backend.ssh_config,
                                ssh_identity_file=backend.ssh_identity_file)
    if transport is None:
        raise ConfigError(f"[target].host: '{shown}': its ansible_connection is not one testinfra runs commands "
                          "over (ssh, paramiko_ssh, local, docker, lxc); use one of them for this host")
    tb = transport.backend
    if tb.NAME in ("ssh", "safe-ssh"):
        if "batchmode" not in (tb.ssh_extra_args or "").lower():
            tb.ssh_extra_args = f"{tb.ssh_extra_args or ''} -o BatchMode=yes".strip()
        tb.controlpath, tb.controlpersist = os.path.join(control_dir, "master"), CONTROL_PERSIST_S
    if tb.NAME == "paramiko" and importlib.util.find_spec("paramiko") is None:
        raise ConfigError(f"[target].host: '{shown}' connects with paramiko_ssh, which needs the paramiko package; "
                          "install pgbackup-verify[ssh], or use ansible_connection=ssh")
    return childenv.confine_host(transport)


def open_host(spec: str) -> RemoteHost:
    """Connect to the target's backup host now, so a failure is one classified line, not a traceback later."""
    kind = scheme(spec)
    kwargs: dict[str, Any] = {}
    control_dir = ""
    transport = None
    if kind == "paramiko" and importlib.util.find_spec("paramiko") is None:
        raise ConfigError(f"[target].host: '{shown_spec(spec)}' needs the paramiko package; install "
                          "pgbackup-verify[ssh], or use ssh:// (the OpenSSH client)")
    if kind == "ansible":
        from pgbackup_verify.config.inventory import require_ansible

        require_ansible(f"[target].host '{shown_spec(spec)}'")
    if kind in ("ssh", "safe-ssh", "ansible"):
        control_dir = tempfile.mkdtemp(prefix="pgbv-ssh-")  # 0700: nobody else can use the shared connection
    if kind in ("ssh", "safe-ssh"):
        kwargs = {"ssh_extra_args": "-o BatchMode=yes", "controlpath": os.path.join(control_dir, "master"),
                  "controlpersist": CONTROL_PERSIST_S}
    try:
        host = childenv.confine_host(testinfra.get_host(spec, **kwargs))  # children get no secret
        if kind == "ansible":
            transport = _ansible_transport(spec, host, control_dir)
        with warnings.catch_warnings():
            # paramiko's "Unknown host key" warning: the key is checked against known_hosts right after.
            warnings.filterwarnings("ignore", message="Unknown .* host key", category=UserWarning)
            res = host.run("true")
        ok, why = res.rc == 0, (res.stderr.strip() or f"exit {res.rc}")
        if kind == "paramiko":
            check_paramiko_host_key(spec, host)
        if transport is not None and transport.backend.NAME == "paramiko":
            check_paramiko_host_key(_transport_spec(transport.backend), transport)
    except UserError:
        if control_dir:
            shutil.rmtree(control_dir, ignore_errors=True)
        raise
    except Exception as e:  # every backend raises its own kinds on a bad spec or host
        if control_dir:
            shutil.rmtree(control_dir, ignore_errors=True)
        raise _classified(spec, _why(e)) from None
    remote = RemoteHost(spec, host, control_dir, transport)
    if not ok:
        remote.close()
        raise HostUnreachable(f"backup host '{shown_spec(spec)}': FAILED (cannot run a command: {why[:300]}); "
                              "fix: check [target].host and the access to it")
    return remote
