"""`--shard K/N`: a fleet split over N verification hosts, each checking exactly its part."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgbackup_verify.config import shard
from pgbackup_verify.errors import ConfigError

CHECKS = Path(__file__).resolve().parent.parent / "checks"


def test_200_targets_over_two_hosts_give_each_exactly_its_half() -> None:
    names = [f"db{i:03d}" for i in range(200)]
    one, two = shard.mine(names, 1, 2), shard.mine(names, 2, 2)
    assert len(one) == len(two) == 100 and one.isdisjoint(two) and one | two == set(names)
    thirds = [shard.mine(names, k, 3) for k in (1, 2, 3)]
    assert sorted(map(len, thirds)) == [66, 67, 67] and set().union(*thirds) == set(names)
    assert shard.mine(reversed(names), 1, 2) == one  # the order the files are found in does not matter


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_is_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid shard '{re.escape(text)}' from --shard; write K/N"):
        shard.parse(text, "--shard")


def test_each_host_collects_only_its_targets(pytester: pytest.Pytester, tmp_path: Path) -> None:
    targets = tmp_path / "fleet"
    targets.mkdir()
    for name in ("alpha", "beta", "gamma", "delta", "epsilon"):
        (targets / f"{name}.toml").write_text(f'[database]\ndsn = "host=127.0.0.1 port=1 dbname=x user=y"\n'
                                              f'dump_role = "y"\n[backups]\ndirectory = "{tmp_path}"\n')
    seen = []
    for k in (1, 2):
        result = pytester.runpytest_subprocess("--target", str(targets), "--shard", f"{k}/2", "--collect-only", "-q",
                                               "-p", "no:cacheprovider", str(CHECKS / "test_host.py"))
        seen.append({m for m in re.findall(r"\[(\w+)\]", result.stdout.str())})
    assert seen == [{"alpha", "delta", "gamma"}, {"beta", "epsilon"}]
    result = pytester.runpytest_subprocess("--target", str(targets), "--shard", "3/2", "-p", "no:cacheprovider",
                                           str(CHECKS / "test_host.py"))
    assert result.ret == 4
    assert "invalid shard '3/2' from command line; write K/N with 1 <= K <= N" in result.stderr.str()
