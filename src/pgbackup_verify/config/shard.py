"""`--shard K/N`: split a fleet of targets over N verification hosts by target name.

The target names of the whole fleet, sorted, are dealt out in turn: host K of N checks the names at
positions K-1, K-1+N, K-1+2N... So every target is checked by exactly one host, and the parts differ
in size by at most one (200 targets over 2 hosts: 100 each). Each host must see the same fleet (the
same target directory); adding a target may move others to another shard, which is harmless: every
run checks its whole part. The per-host JSON reports are merged by reading them side by side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pgbackup_verify.errors import ConfigError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse(text: str, source: str) -> tuple[int, int]:
    """(K, N) from "K/N", 1 <= K <= N; a ConfigError naming `source` otherwise."""
    m = _SHARD.match(text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"invalid shard '{text}' from {source}; write K/N with 1 <= K <= N, e.g. --shard 1/2")
    return int(m.group(1)), int(m.group(2))


def mine(names: Iterable[str], k: int, n: int) -> set[str]:
    """The names shard K of N checks."""
    return {name for i, name in enumerate(sorted(set(names))) if i % n == k - 1}
