"""The environment each child process gets: an allow-list per kind of tool, never the run's own.

The run's environment holds PGPASSWORD and the Kuma push tokens and login. A child that inherits it
shows them in `/proc/PID/environ` to its OS user, and to anything that child runs. So no child of
this package (outside the restore drill, which builds its own) inherits: each gets one of these.

- `plain()`        PATH, locale, TZ, TMPDIR, HOME: `pg_dump --version`, `pg_restore` reading a local
                   file, shellcheck, stat/find/df/crontab on the local host.
- `pg_client()`    plain + the libpq connection variables (PGHOST, PGPORT, PGUSER, PGSSLMODE...);
                   PGPASSWORD only with `password=True`, for a tool that logs in to the target itself.
- `rclone()`       plain + RCLONE_* (its config by environment), XDG config/cache and proxy settings.
- `host_backend()` plain + what a testinfra transport needs locally (ssh agent, docker/kubectl context).

A variable read through `Secret.from_env` (a push token, the Kuma login) is recorded with
`never_pass` and is left out even when its name matches an allowed prefix.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

_BASE = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "HOME", "USER", "LOGNAME")
_LOCALE_PREFIX = "LC_"
# libpq's connection variables (https://www.postgresql.org/docs/current/libpq-envars.html), never PGPASSWORD.
_PG = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE",
       "PGOPTIONS", "PGAPPNAME", "PGSSLMODE", "PGREQUIRESSL", "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY",
       "PGSSLROOTCERT", "PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI", "PGREQUIREPEER", "PGSSLMINPROTOCOLVERSION",
       "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB", "PGCONNECT_TIMEOUT",
       "PGCLIENTENCODING", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS", "PGDATESTYLE", "PGTZ", "PGSYSCONFDIR",
       "PGLOCALEDIR")
_RCLONE = ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
           "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")
_HOST = ("SSH_AUTH_SOCK", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH",
         "DOCKER_TLS_VERIFY", "CONTAINER_HOST", "KUBECONFIG")

_never: set[str] = {"PGPASSWORD"}


def never_pass(name: str) -> None:
    """`name` holds a secret of this run: no allow-list below lets it through."""
    _never.add(name)


def _pick(names: Iterable[str], prefixes: tuple[str, ...] = (), env: Mapping[str, str] | None = None
          ) -> dict[str, str]:
    src = os.environ if env is None else env
    wanted = set(_BASE) | set(names)
    return {k: v for k, v in src.items()
            if k not in _never and (k in wanted or k.startswith((_LOCALE_PREFIX, *prefixes)))}


def plain(env: Mapping[str, str] | None = None) -> dict[str, str]:
    return _pick((), env=env)


def pg_client(password: bool = False, env: Mapping[str, str] | None = None) -> dict[str, str]:
    out = _pick(_PG, env=env)
    src = os.environ if env is None else env
    if password and "PGPASSWORD" in src:
        out["PGPASSWORD"] = src["PGPASSWORD"]
    return out


def rclone(env: Mapping[str, str] | None = None) -> dict[str, str]:
    return _pick(_RCLONE, ("RCLONE_",), env=env)


def host_backend(env: Mapping[str, str] | None = None) -> dict[str, str]:
    return _pick(_HOST, env=env)


def confine_host(host: Any) -> Any:
    """Every command a testinfra host runs from here on gets `host_backend()`, not this run's environment.

    testinfra's backends (local, ssh, docker, kubectl...) all start their local process in the public
    `run_local` of the base backend, which inherits the caller's environment; this replaces it on the
    one backend object with the same steps (quote, encode, result) plus an explicit `env`."""
    backend = host.backend
    if getattr(backend, "_pgbv_confined", False):
        return host

    def run_local(command: str, *args: str) -> Any:
        cmd = backend.encode(backend.quote(command, *args))
        p = subprocess.Popen(cmd, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S602
                             stderr=subprocess.PIPE, env=host_backend())
        stdout, stderr = p.communicate()
        return backend.result(p.returncode, cmd, stdout, stderr)

    backend.run_local = run_local
    backend._pgbv_confined = True
    return host
