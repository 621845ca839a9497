"""Which checks each Kuma push monitor answers for: the monitors of the target files, merged per
monitor, and (for a broken target file) the [kuma] tables read on their own."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pgbackup_verify.config import KumaSection, Target
from pgbackup_verify.config.ops import looks_like_token
from pgbackup_verify.outcome import CheckResult, RunFold

if TYPE_CHECKING:
    from pgbackup_verify.config.settings import BrokenTarget


@dataclass(frozen=True)
class PushMonitor:
    """One push destination: the checks it covers, for one target (None: every check)."""

    name: str
    token_env: str
    covers: tuple[str, ...]
    url: str
    timeout: float
    targets: tuple[str, ...] | None = None  # None: checks of every target count


def covered_by(m: PushMonitor, run: RunFold, claimed: Iterable[str] = ()) -> list[CheckResult]:
    """The checks this monitor answers for. A check no monitor covers counts for every monitor:
    nothing may fail unseen because the target file forgot to route it (never silent).

    `claimed`: every marker/module some monitor covers."""
    claimed = set(claimed)
    return [c for c in run.checks.values()
            if (c.groups & set(m.covers) or (claimed and not c.groups & claimed))
            and (m.targets is None or c.target in ("", *m.targets))]


def monitors_of(section: KumaSection, target: str | None) -> list[PushMonitor]:
    return [PushMonitor(p.monitor, p.token_env, p.covers, section.url.rstrip("/"), section.push_timeout,
                        (target,) if target else None) for p in section.push]


def monitors_for(targets: tuple[Target, ...] | list[Target],
                 broken: Iterable[BrokenTarget] = ()) -> list[PushMonitor]:
    """One push per Kuma monitor: target files sharing a monitor (same url and token env) are merged,
    else the last host's push would overwrite a failed host's DOWN. `broken`: target files of the run
    that did not load (config.settings.BrokenTarget): their monitors, read on their own, hear of it."""
    broken = list(broken)
    multi = len(targets) + len(broken) > 1
    pairs = [(t.name, m) for t in targets for m in (monitors_of(t.kuma, None) if t.kuma else [])]
    # An inventory host's monitors are in its variables, which did not validate: none is read.
    pairs += [(b.name, m) for b in broken if not b.from_inventory for m in tolerant_monitors(b.source)]
    merged: dict[tuple[str, str], PushMonitor] = {}
    for name, m in pairs:
        if multi:
            m = replace(m, targets=(name,))
        key = (m.url, m.token_env)
        if key in merged:
            old = merged[key]
            covers = tuple(dict.fromkeys(old.covers + m.covers))
            both = None if old.targets is None or m.targets is None else old.targets + m.targets
            m = PushMonitor(old.name, old.token_env, covers, old.url, min(old.timeout, m.timeout), both)
        merged[key] = m
    return list(merged.values())


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\s\"-]+?)\s*\]\]?\s*(#.*)?$")


def tolerant_monitors(path: Path) -> list[PushMonitor]:
    return tolerant_read(path)[0]


def _blocks(path: Path) -> list[tuple[str, list[str]]]:
    """The file's [kuma] and [[kuma.push]] tables, each as (header name, its lines)."""
    try:
        if not path.is_file():  # a FIFO named like a target would block the read forever
            return []
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out: list[tuple[str, list[str]]] = []
    inside = False
    for line in lines:
        m = _HEADER.match(line)
        if m:
            name = m.group(1).replace(" ", "").replace('"', "")
            inside = name.split(".")[0] == "kuma"
            if inside:
                out.append((name, []))
        if inside:
            out[-1][1].append(line)
    return out


def tolerant_read(path: Path) -> tuple[list[PushMonitor], list[str]]:
    """Push monitors of a target file that failed validation, each [[kuma.push]] read on its own,
    and the entries that could not be read (named so the other monitors' message can say so).

    A broken [database], a TOML syntax error elsewhere or one broken entry must not hide the
    monitors that have to hear about it. No monitor at all when [kuma].url is unreadable."""
    blocks = _blocks(path)
    try:
        kuma = tomllib.loads("\n".join(next(b for n, b in blocks if n == "kuma"))).get("kuma", {})
        url = str(kuma["url"]).rstrip("/")
        timeout = float(kuma.get("push_timeout", 5.0))
        if timeout <= 0:
            timeout = 5.0
    except (StopIteration, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return [], []
    monitors: list[PushMonitor] = []
    unreadable: list[str] = []
    for i, (_name, block) in enumerate((b for b in blocks if b[0] == "kuma.push"), start=1):
        try:
            p = tomllib.loads("\n".join(block))["kuma"]["push"][0]
            token_env = str(p["token_env"])
            if not token_env.isidentifier() or looks_like_token(token_env):
                raise ValueError("token_env")  # never the value: it may be a pasted token
            covers = p.get("covers", ())
            monitors.append(PushMonitor(str(p["monitor"]), token_env,
                                        tuple(str(c) for c in covers) if isinstance(covers, list) else (),
                                        url, timeout))
        except (tomllib.TOMLDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError):
            unreadable.append(f"[[kuma.push]] #{i}")
    return monitors, unreadable
