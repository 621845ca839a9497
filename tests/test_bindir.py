"""Which PostgreSQL server binaries the throwaway clusters use (facts/drill/cluster.py pg_bindir)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pgbackup_verify.facts.drill.cluster import pg_bindir


def server(base: Path, version: str) -> Path:
    """A fake installed server: <base>/<version>/bin/pg_ctl."""
    bindir = base / version / "bin"
    bindir.mkdir(parents=True)
    (bindir / "pg_ctl").write_text("#!/bin/sh\n")
    (bindir / "pg_ctl").chmod(0o755)
    return bindir


def fake_pg_config(path_dir: Path, bindir: Path) -> None:
    path_dir.mkdir(exist_ok=True)
    script = path_dir / "pg_config"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = --bindir ] && echo '{bindir}'\n")
    script.chmod(0o755)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """9.6, 15 and 16 installed: as text, 9.6 sorts last; as versions, 16 is the newest."""
    b = tmp_path / "postgresql"
    for v in ("9.6", "15", "16"):
        server(b, v)
    (b / "common" / "bin").mkdir(parents=True)  # not a version: never chosen
    (b / "common" / "bin" / "pg_ctl").write_text("")
    return b


def test_newest_version_by_number_not_by_text(base: Path, tmp_path: Path) -> None:
    empty_path = str(tmp_path / "no-bin")
    assert pg_bindir(base, empty_path) == base / "16" / "bin"
    (base / "16" / "bin" / "pg_ctl").unlink()  # 16's client only: no server binaries
    assert pg_bindir(base, empty_path) == base / "15" / "bin"


def test_pg_config_names_the_server_when_it_has_one(base: Path, tmp_path: Path) -> None:
    fake_pg_config(tmp_path / "bin", base / "15" / "bin")
    assert pg_bindir(base, str(tmp_path / "bin")) == base / "15" / "bin"


def test_a_pg_config_of_a_missing_server_is_passed_over(base: Path, tmp_path: Path) -> None:
    """libpq's pg_config names /usr/lib/postgresql/<libpq major>/bin even with no such server."""
    fake_pg_config(tmp_path / "bin", base / "17" / "bin")
    assert pg_bindir(base, str(tmp_path / "bin")) == base / "16" / "bin"


def test_pg_ctl_on_the_path_comes_first(base: Path, tmp_path: Path) -> None:
    path_dir = tmp_path / "bin"
    path_dir.mkdir()
    (path_dir / "pg_ctl").symlink_to(base / "9.6" / "bin" / "pg_ctl")
    fake_pg_config(path_dir, base / "15" / "bin")
    assert pg_bindir(base, str(path_dir)) == base / "9.6" / "bin"


def test_no_server_anywhere_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"pg_ctl not found; install the PostgreSQL server package"):
        pg_bindir(tmp_path / "none", str(tmp_path / "no-bin"))


def test_this_machine(tmp_path: Path) -> None:
    """The real default finds a working pg_ctl; without pg_ctl on the PATH, pg_config's answer."""
    assert subprocess.run([str(pg_bindir() / "pg_ctl"), "--version"], capture_output=True).returncode == 0
    real_pg_config = subprocess.run(["sh", "-c", "command -v pg_config"], capture_output=True, text=True).stdout.strip()
    if not real_pg_config:
        pytest.skip("no pg_config on this machine")
    only_pg_config = tmp_path / "bin"
    only_pg_config.mkdir()
    (only_pg_config / "pg_config").symlink_to(real_pg_config)
    expected = subprocess.run([real_pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
    if not (Path(expected) / "pg_ctl").is_file():
        pytest.skip("this pg_config belongs to libpq only")
    assert pg_bindir(search_path=str(only_pg_config)) == Path(expected)
