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

# Under xdist (`./dev test` runs -n 2) each entry below is ONE unit of work for one worker, sent
# in this order (the longest first, so no worker is left with a long tail); every other test is
# a unit of its own, slow ones first: those fill in at the end, so both workers finish together.
# The order follows a measured `./dev test --durations`: the units of a few minutes first.
#   "demo": the demo runs and what must not overlap with them: the demo sweeps /tmp of dead demo
#   dirs (a killed demo's leftovers must stay for the run that proves the sweep), and its drills
#   hold the host's default drill lock, which the default-lock tests wait on for only 1 s.
#   "kuma": everything using the session's real Kuma, so only one worker starts one.
#   Modules whose tests share one checks run over many targets (a module-scoped fixture) stay
#   together, so that run happens once; so do modules sharing one real server (a module fixture).
XDIST_UNITS: dict[str, tuple[str, ...]] = {
    "kuma": ("tests/test_kuma_push.py::", "tests/test_kuma_monitors.py::", "tests/test_kuma_demo.py::",
             "tests/test_kuma_server.py::", "tests/test_kuma_recovery.py::", "tests/test_kuma_secrets.py::"),
    "test_drill.py": ("tests/test_drill.py::",),  # one checks run of nine drill cases, two killed runs
    # One OpenSSH server and one checks run per module; together, as both create and remove its login user.
    "sshd": ("tests/test_remote.py::", "tests/test_inventory.py::"),
    "demo": ("tests/test_seed_night.py::", "tests/test_report_browser.py::", "tests/test_operation.py::test_demo_",
             "tests/test_locks.py::test_default_drill_lock_", "tests/test_locks.py::test_a_non_root_run_after_"),
    "test_metrics_prometheus.py": ("tests/test_metrics_prometheus.py::",),  # one Prometheus stack, three runs
    "test_fix_texts.py": ("tests/test_fix_texts.py::",),  # one demo build, seven checks runs (~1-2 min)
    "test_formats.py": ("tests/test_formats.py::",),  # one corpus cluster, one checks run: every dump format
    "test_corpus.py": ("tests/test_corpus.py::",),  # one corpus cluster and one checks run for the module
    "test_clusterdump.py": ("tests/test_clusterdump.py::",),  # one source cluster, one checks run, two drills
    "test_sandbox.py": ("tests/test_sandbox.py::",),  # one "live" cluster whose databases hold the traps
    "test_sample_db.py": ("tests/test_sample_db.py::",),
    **{m: (f"tests/{m}::",) for m in ("test_init.py", "test_minimal_target.py", "test_offsite.py", "test_grants.py",
                                      "test_host.py", "test_custom_sql.py", "test_dumps.py", "test_trends.py")},
    "test_fleet.py": ("tests/test_fleet.py::",),  # one demo database, two checks runs, Chromium
    **{m: (f"tests/{m}::",) for m in ("test_nights.py", "test_in_progress.py", "test_hostile_fs.py", "test_pg16.py",
                                      "test_drill_parallel.py", "test_drill_tiers.py", "test_custom_rows.py",
                                      "test_scanrecord.py", "test_load_counts.py")},
    "test_grants_differential.py": ("tests/test_grants_differential.py::",),
    "test_host_names.py": ("tests/test_host_names.py::",),
    "test_paste_fixes.py": ("tests/test_paste_fixes.py::",),  # one cluster, one checks run, every fix pasted
    "test_console_controls.py": ("tests/test_console_controls.py::",),
    "test_redact.py": ("tests/test_redact.py::",),
    "test_tls.py": ("tests/test_tls.py::",),  # one TLS cluster
    "test_child_env.py": ("tests/test_child_env.py::",),  # one demo build, one checks run scanned
    "test_fuzz_parsers.py": ("tests/test_fuzz_parsers.py::",),  # one cluster for the -Fc archive, ~30 s of examples
}


def xdist_unit(nodeid: str) -> str | None:
    return next((unit for unit, prefixes in XDIST_UNITS.items() if nodeid.startswith(prefixes)), None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The order in which xdist hands out the units (see XDIST_UNITS); a plain run is reordered alike."""
    rank = {unit: i for i, unit in enumerate(XDIST_UNITS)}

    def key(pair: tuple[int, pytest.Item]) -> tuple[int, int, int]:
        index, item = pair
        unit = xdist_unit(item.nodeid)
        if unit is not None:
            return (rank[unit], 0, index)
        return (len(rank), 0 if item.get_closest_marker("slow") else 1, index)

    items[:] = [item for _, item in sorted(enumerate(items), key=key)]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`-n N` without an explicit --dist: the units of XDIST_UNITS, in collection order."""
    args = [str(a) for a in config.invocation_params.args]
    if config.option.dist != "load" or any(a == "--dist" or a.startswith(("--dist=", "-d")) for a in args):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SelfTestScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid) or nodeid

    config.option.loadscopereorder = False  # keep the collection order: the longest units come first
    return SelfTestScheduling(config, log)


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
def target_file(tmp_path: Path, seed_cluster: ThrowawayCluster) -> Path:
    """A target file for the seed database (dump role `directus`), named `t`, with an empty backup dir."""
    (tmp_path / "b").mkdir()
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    return demo.write_target_file(tmp_path / "t.toml", dsn, tmp_path / "b", name="t")


@pytest.fixture
def write_target(tmp_path: Path, seed_cluster: ThrowawayCluster):
    """Write a target file for the seed database; `extra` appends TOML, `backup_dir` overrides."""

    def _write(backup_dir: Path, extra: str = "", name: str = "selftest", dsn: str | None = None) -> Path:
        dsn = dsn or seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
        return demo.write_target_file(tmp_path / f"{name}.toml", dsn, backup_dir, name=name, extra=extra)

    return _write


# A real Uptime Kuma (npm, cached) for the Kuma self-tests; one per session, one admin login.
kuma = kuma_server()
