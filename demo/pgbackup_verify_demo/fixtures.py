"""Fixture factories of the demo and self-tests: a real, running Uptime Kuma."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pgbackup_verify_demo.kuma_server import KumaAdmin, KumaServer, free_port, gen_token, install

ADMIN_USER = "pgbvadmin"


@dataclass
class RunningKuma:
    server: KumaServer
    admin: KumaAdmin
    username: str
    password: str

    @property
    def url(self) -> str:
        return self.server.url


def kuma_server(username: str = ADMIN_USER, password: str | None = None) -> Callable[..., RunningKuma]:
    """A session-scoped running Kuma with a logged-in admin (login is rate-limited: reuse it).

    The password is random per session unless given (Kuma wants letters and digits, >= 6).
    """
    password = password or "pgbv" + gen_token(20)

    @pytest.fixture(scope="session")
    def kuma_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningKuma]:
        server = KumaServer(data_dir=tmp_path_factory.mktemp("kuma-data"), port=free_port(), package=install())
        with server:
            admin = KumaAdmin(server.url, username, password)
            try:
                yield RunningKuma(server, admin, username, password)
            finally:
                admin.close()

    return kuma_fixture
