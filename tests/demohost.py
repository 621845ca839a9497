"""One demo host (the seed-shaped database, a healthy week of real dumps) for a module's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgbackup_verify_demo import demo


def built_demo(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[demo.Demo]:
    """Build it under a fresh temp dir named `name`; its cluster stops when the module is done."""
    d = demo.build(tmp_path_factory.mktemp(name))
    try:
        yield d
    finally:
        d.cluster.stop()
