"""node_exporter's textfile collector: `--metrics FILE` holds the run's series, replaced atomically.

prometheus-client's `generate_latest` writes the text (escaping label values); safefs writes the file
(a fresh temp file renamed over FILE, mode 0644, never through a planted link: the suite often runs as
root), which is what `write_to_textfile` does without the link and mode guarantees.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from pgbackup_verify.errors import ConfigError
from pgbackup_verify.safefs import atomic_write


def check_path(path: Path) -> None:
    """Refuse, before the run, a FILE that cannot be written: one line naming it and what to do."""
    if path.is_dir():
        raise ConfigError(f"--metrics '{path}' is a directory; name a file in it, e.g. {path / 'pgbackup_verify.prom'}")
    if not path.name.endswith(".prom"):
        # node_exporter's textfile collector reads only *.prom: any other name would never be scraped.
        raise ConfigError(f"--metrics '{path}': node_exporter reads only *.prom files; name it e.g. "
                          f"'{path.with_suffix('.prom').name}'")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--metrics '{path}': directory '{path.parent}' does not exist or cannot be written; "
                          "create it (e.g. node_exporter's --collector.textfile.directory)")


def write(path: Path, registry: CollectorRegistry) -> None:
    atomic_write(path, generate_latest(registry), mode=0o644)
