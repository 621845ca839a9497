"""What earlier runs left for the metrics: per target and concern, when a run last selected it and when one
last found it healthy. node_exporter's textfile and a Pushgateway group are replaced by each run, so the
time of the last green run is carried here (`<reports dir>/metrics-state.json`), not recomputed.

The file is ours but read as untrusted input: anything that is not a number in the expected place is dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pgbackup_verify.safefs import atomic_write

STATE_FILE = "metrics-state.json"
Key = tuple[str, str]  # (target, concern)
Times = tuple[float | None, float | None]  # (last run, last success)


def _time(v: object) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return float(v) if ok else None  # type: ignore[arg-type]


@dataclass(frozen=True)
class State:
    times: dict[Key, Times] = field(default_factory=dict)

    def keys(self) -> Iterator[Key]:
        return iter(self.times)

    def items(self) -> Iterable[tuple[Key, Times]]:
        return self.times.items()

    def updated(self, ran: Iterable[Key], succeeded: Iterable[Key], at: float,
                keep: Iterable[str] | None = None) -> State:
        """This run's times over the earlier ones; with `keep`, only those targets stay (a target removed
        from the configuration stops being reported instead of going stale forever)."""
        kept = set(keep) if keep is not None else None
        times = {k: v for k, v in self.times.items() if kept is None or k[0] in kept}
        for k in ran:
            times[k] = (at, times.get(k, (None, None))[1])
        for k in succeeded:
            times[k] = (times.get(k, (at, None))[0], at)
        return State(times)

    def to_json(self) -> str:
        doc: dict[str, dict[str, dict[str, float | None]]] = {}
        for (t, c), (ran, good) in sorted(self.times.items()):
            doc.setdefault(t, {})[c] = {"last_run": ran, "last_success": good}
        return json.dumps({"targets": doc}, indent=1)


def read(path: Path) -> State:
    """The state at `path`; an absent, unreadable or foreign file is an empty state (the series then start
    with this run)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return State()
    times: dict[Key, Times] = {}
    targets = doc.get("targets") if isinstance(doc, dict) else None
    for t, concerns in (targets.items() if isinstance(targets, dict) else ()):
        for c, v in (concerns.items() if isinstance(concerns, dict) else ()):
            if isinstance(v, dict):
                times[str(t), str(c)] = (_time(v.get("last_run")), _time(v.get("last_success")))
    return State(times)


def write(path: Path, state: State) -> None:
    atomic_write(path, state.to_json(), mode=0o644)
