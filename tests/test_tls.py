"""A database over the network: TLS options and `sslmode` of [database].dsn are honoured as libpq reads them.

A real cluster with TLS on (a CA and a server certificate made here by openssl) whose pg_hba.conf rejects
every connection without TLS: the suite's read-only connection gets in with `sslmode=verify-full` and the
right root certificate, and is refused in one line without TLS or with another CA.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgbackup_verify.config import load_target
from pgbackup_verify.facts.db import DatabaseUnreachable, connect_readonly, scalar
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster, chown_for_cluster


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    return key, crt


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThrowawayCluster, Path, Path]]:
    d = tmp_path_factory.mktemp("tls")
    ca_key, ca_crt = _ca(d, "test-ca")
    _, other_ca = _ca(d, "other-ca")
    with ThrowawayCluster(tag="tls-") as c:
        key, csr, crt = c.data / "server.key", d / "server.csr", c.data / "server.crt"
        subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr)],
                       check=True, capture_output=True)
        (d / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                        "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.ext"), "-out", str(crt)],
                       check=True, capture_output=True)
        key.chmod(0o600)
        hba = c.data / "pg_hba.conf"
        hba.write_text("hostnossl all all 0.0.0.0/0 reject\n" + hba.read_text())
        for p in (key, crt, hba):
            chown_for_cluster(p)
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute("SELECT pg_reload_conf()")
        yield c, ca_crt, other_ca


def target(tmp_path: Path, dsn: str) -> object:
    f = tmp_path / "tls.toml"
    f.write_text(f'[database]\ndsn = "{dsn}"\ndump_role = "postgres"\n[backups]\ndirectory = "{tmp_path}"\n')
    return load_target(f)


def test_verify_full_with_the_servers_ca_connects_over_tls(tls_cluster, tmp_path: Path) -> None:
    c, ca, _ = tls_cluster
    t = target(tmp_path, f"{c.dsn()} sslmode=verify-full sslrootcert={ca}")
    with connect_readonly(t) as conn:  # type: ignore[arg-type]
        assert scalar(conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        assert conn.info.parameter_status("default_transaction_read_only") == "on"


@pytest.mark.parametrize(("extra", "why"), [
    ("sslmode=disable", "no encryption"),
    ("sslmode=verify-full sslrootcert={other}", "certificate verify failed"),
])
def test_without_tls_or_with_another_ca_it_is_one_line(tls_cluster, tmp_path: Path, extra: str, why: str) -> None:
    c, _, other = tls_cluster
    t = target(tmp_path, f"{c.dsn()} {extra.format(other=other)}")
    with pytest.raises(DatabaseUnreachable) as exc:
        with connect_readonly(t):  # type: ignore[arg-type]
            pass
    msg = str(exc.value)
    assert f"database 127.0.0.1:{c.port}/postgres as postgres of target 'tls'" in msg
    assert why in msg and "\n" not in msg
