"""The throwaway cluster's initdb template: made once per PostgreSQL build, kept private, copied per cluster."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import psycopg
import pytest

from pgbackup_verify.facts.drill import cluster as cl
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    return d


def test_first_cluster_runs_initdb_and_keeps_it_later_ones_copy_it(cache: Path) -> None:
    first = ThrowawayCluster(tag="tmpl-", template_cache=cache).start()
    try:
        assert not first.from_template
    finally:
        first.stop()
    template = cl.template_dir(cl.pg_bindir(), cache)
    st = os.lstat(template)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077
    assert (template / "data" / "PG_VERSION").is_file() and not (template / "data" / "postmaster.pid").exists()
    with ThrowawayCluster(tag="tmpl-", template_cache=cache) as second:
        assert second.from_template
        with psycopg.connect(second.dsn(), autocommit=True) as conn:
            settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                         "('fsync', 'full_page_writes', 'synchronous_commit', 'wal_level')"))
            conn.execute("CREATE DATABASE restored TEMPLATE template0")  # what the drill does first
        assert settings == {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off",
                            "wal_level": "minimal"}
        root = second.root
    assert not root.exists(), "stop() removes the cluster directory"
    assert (template / "data" / "PG_VERSION").is_file(), "the template itself is never started or changed"


@pytest.mark.parametrize("damage", ["group-readable", "symlink", "no PG_VERSION"])
def test_a_template_that_is_not_private_or_whole_is_never_copied(cache: Path, tmp_path: Path, damage: str) -> None:
    bindir = cl.pg_bindir()
    template = cl.template_dir(bindir, cache)
    elsewhere = tmp_path / "planted"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "PG_VERSION").write_text("15\n")
    if damage == "group-readable":
        shutil.move(elsewhere, template)
        template.chmod(0o750)
    elif damage == "symlink":
        elsewhere.chmod(0o700)
        template.symlink_to(elsewhere)
    else:
        shutil.move(elsewhere, template)
        template.chmod(0o700)
        (template / "data" / "PG_VERSION").unlink()
    assert not cl.copy_template(bindir, tmp_path / "data", cache)
    assert not (tmp_path / "data").exists()


def test_the_template_key_follows_the_binaries(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("postgres", "initdb"):
        (bindir / name).write_bytes(b"v15")
    before = cl.template_dir(bindir, tmp_path)
    assert before == cl.template_dir(bindir, tmp_path) and before.name.startswith(cl.TEMPLATE_PREFIX)
    (bindir / "postgres").write_bytes(b"v15.1 upgraded")
    assert cl.template_dir(bindir, tmp_path) != before


def test_the_default_cache_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        d = cl.template_cache_dir()
        assert d is not None and d == Path("/var/cache") / "pgbackup-verify"
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        d = cl.template_cache_dir()
        assert d == tmp_path / "xdg" / "pgbackup-verify"
    assert d is not None
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
