"""Self-test fixtures: real throwaway clusters and real dumps, never mocks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgbackup_verify_demo import demo
from pgbackup_verify_demo.fixtures import kuma_server

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

pytest_plugins = ["pytester"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Clusters of an earlier self-test run that was killed would keep running: stop them."""
    if not hasattr(session.config, "workerinput"):
        from pgbackup_verify.facts.drill.cluster import CLUSTER_PREFIX, sweep_stale

        for line in sweep_stale(f"{CLUSTER_PREFIX}*"):
            print(line)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ThrowawayCluster]:
    """One throwaway cluster per test session (roles are cluster-wide, so not the shared server)."""
    with ThrowawayCluster(tag="selftest-") as c:
        yield c


@pytest.fixture(scope="session")
def seed_cluster() -> Iterator[ThrowawayCluster]:
    """A cluster holding the healthy seed-shaped database `directus`; treat it as read-only."""
    with ThrowawayCluster(tag="seed-") as c:
        demo.build_seed_database(c)
        yield c


@pytest.fixture(scope="session")
def healthy_backups(seed_cluster: ThrowawayCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A week of real nightly dumps of the seed database; copy before changing anything."""
    d = tmp_path_factory.mktemp("healthy-backups")
    demo.write_nightly_dumps(seed_cluster, d)
    return d


@pytest.fixture
def backups(healthy_backups: Path, tmp_path: Path) -> Path:
    """A private copy of the healthy week, free to break (mtimes kept)."""
    d = tmp_path / "backups"
    shutil.copytree(healthy_backups, d)
    return d


@pytest.fixture
def write_target(tmp_path: Path, seed_cluster: ThrowawayCluster):
    """Write a target file for the seed database; `extra` appends TOML, `backup_dir` overrides."""

    def _write(backup_dir: Path, extra: str = "", name: str = "selftest", dsn: str | None = None) -> Path:
        dsn = dsn or seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
        return demo.write_target_file(tmp_path / f"{name}.toml", dsn, backup_dir, name=name, extra=extra)

    return _write


# A real Uptime Kuma (npm, cached) for the Kuma self-tests; one per session, one admin login.
kuma = kuma_server()
