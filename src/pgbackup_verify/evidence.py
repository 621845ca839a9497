"""Evidence a check records: named facts shown in the terminal, the HTML report and JUnit.

A check states what it measured against what it expected, barman style:
`latest dump age: 30.2 h (limit 26 h)`. The plugin turns the recorded items into
report sections; this module only collects them.
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from pgbackup_verify.outcome import CAUSE_ORDER, NOT_JUDGED, XFAIL, XPASS, XPASS_STRICT, order_by_cause, read_phase
from pgbackup_verify.ownership import causes_of
from pgbackup_verify.report.render import render_text
from pgbackup_verify.report.wording import IN_SHORT, LIKELY_CAUSE

EVIDENCE_KEY = pytest.StashKey["Evidence"]()
PASSED, FAILED = "passed", "failed"


@dataclass(frozen=True)
class Found:
    """What an upstream check reported under a key."""

    status: str  # passed or failed
    text: str = ""  # its finding's first line, without the fix
    concern: str = ""  # grants, dumps...
    objects: tuple[str, ...] = ()  # the objects the finding names (Evidence.in_short)

    def cause_phrase(self) -> str:
        """`grants · dump role USAGE on every schema (sandbox_tac)`: the finding's name and its objects."""
        name = self.text.split(": FAILED", 1)[0].strip()
        shown = ", ".join(self.objects[:3]) + (f" +{len(self.objects) - 3} more" if len(self.objects) > 3 else "")
        return " \u00b7 ".join(x for x in (self.concern, name + (f" ({shown})" if shown else "")) if x)


@dataclass
class Upstream:
    """What upstream checks found, per (target, key): a check that fails records its finding under the
    keys it vouches for (`Evidence.cause`), and a downstream check whose input that is asks for it
    (`Evidence.require_upstream`): "not judged: <the upstream finding>" instead of its own fix, which
    would be advice about the wrong cause. Checks run in the order of cause (outcome.CAUSE_ORDER), so
    the upstream verdict is known first; a key nobody reported on is simply unknown (None)."""

    findings: dict[tuple[str, str], Found] = field(default_factory=dict)

    def report(self, target: str, keys: tuple[str, ...], found: Found) -> None:
        for key in keys:
            old = self.findings.get((target, key))
            if old is None or old.status != FAILED:  # the first failure stands
                self.findings[target, key] = found

    def status(self, target: str, key: str) -> str | None:
        found = self.findings.get((target, key))
        return found.status if found else None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        ev = item.stash.get(EVIDENCE_KEY, None)
        if ev is not None and ev.causes and rep.when == "call":
            phase = read_phase(rep)  # the outcome fold's reading of the report, not a second one
            if phase.kind not in (XFAIL, XPASS, XPASS_STRICT):
                failed = phase.outcome == FAILED
                concern = next((m.name for m in item.iter_markers() if m.name in CAUSE_ORDER), "")
                self.report(ev.target, tuple(ev.causes), Found(phase.outcome, finding(phase.text) if failed else "",
                                                               concern, ev.objects if failed else ()))
        return rep


UPSTREAM_KEY = pytest.StashKey[Upstream]()


def upstream(config: pytest.Config) -> Upstream:
    """The run's (this process's: one target's checks stay on one xdist worker) upstream findings."""
    if UPSTREAM_KEY not in config.stash:
        config.stash[UPSTREAM_KEY] = Upstream()
        config.pluginmanager.register(config.stash[UPSTREAM_KEY], "pgbackup-verify-upstream")
    return config.stash[UPSTREAM_KEY]


def order_checks(items: list[pytest.Item], concerns: Collection[str]) -> list[pytest.Item]:
    """Each target's checks in the order of cause, so an upstream verdict is known downstream."""
    def target(item: pytest.Item) -> object:
        callspec = getattr(item, "callspec", None)
        return getattr(callspec.params.get("target") if callspec else None, "name", None)

    def concern(item: pytest.Item) -> str:
        return next((m.name for m in item.iter_markers() if m.name in concerns), "other")  # the nearest wins

    return order_by_cause(items, target, concern)


def finding(text: str) -> str:
    """The cause of a finding, without its fix: `name: FAILED (measured vs limit)`."""
    first = text.strip().splitlines()[0] if text.strip() else "failed"
    return first.split("; fix", 1)[0].strip()


@dataclass
class Evidence:
    items: list[tuple[str, str]] = field(default_factory=list)
    target: str = ""  # the target's name: upstream findings are per target
    registry: Upstream | None = None  # None outside the plugin (a check called by hand): nothing known
    causes: list[str] = field(default_factory=list)  # keys this check vouches for (see Upstream)
    objects: tuple[str, ...] = ()  # the objects its finding is about (Evidence.in_short)

    def cause(self, *keys: str) -> None:
        """If this check fails, its finding is the cause downstream checks on `keys` name."""
        self.causes.extend(keys)

    def upstream(self, key: str) -> str | None:
        """"passed", "failed" or None (not reported in this run): for fix texts that fit the facts."""
        return self.registry.status(self.target, key) if self.registry else None

    def upstream_finding(self, key: str) -> str:
        """The upstream finding under `key` if it failed, else ""."""
        found = self.registry.findings.get((self.target, key)) if self.registry else None
        return found.text if found and found.status == FAILED else ""

    def require_upstream(self, *keys: str) -> None:
        """Skip as "not judged: <the upstream finding>" if an upstream check found this input bad.

        The outcome fold counts such a skip as bad (outcome.is_bad): never silent, never a false fix."""
        for key in keys:
            text = self.upstream_finding(key)
            if text:
                self.not_judged(key, text)

    def not_judged(self, key: str, text: str) -> NoReturn:
        """Skip as "not judged: <text>": the fault `text` names is another check's (ownership.OWNERS)."""
        self("not judged", f"{key}: {text}")
        pytest.skip(f"{NOT_JUDGED}: {text}")

    def in_short(self, text: str, objects: Collection[str] = ()) -> None:
        """The finding in a few words and the objects it names: what a Kuma message and a downstream
        check's "likely cause" show (`USAGE missing on sandbox_tac for directus`)."""
        self.objects = tuple(objects)
        self(IN_SHORT, text)

    def explained(self, message: str) -> str:
        """`message` with `likely cause: <concern> · <finding> (<objects>)` before its fix, when an
        upstream finding in another concern explains a failure under a key this check vouches for."""
        if not self.registry:
            return message
        found = [self.registry.findings.get((self.target, cause)) for key in self.causes for cause in causes_of(key)]
        phrases = list(dict.fromkeys(f.cause_phrase() for f in found if f and f.status == FAILED))
        if not phrases:
            return message
        cause = f"{LIKELY_CAUSE}{'; '.join(phrases)}"
        # The finding in a few words says it too: a Kuma message names the cause's objects.
        self.items = [(k, f"{v}{cause}" if k == IN_SHORT else v) for k, v in self.items]
        head, sep, fix = message.partition("; fix")
        return f"{head}{cause}{sep}{fix}"

    def __call__(self, name: str, value: object) -> None:
        self.items.append((name, str(value)))

    def text(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.items)

    def html(self) -> str:
        return render_text("evidence.html.j2", items=self.items)


def human_bytes(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# The one way a shipped check fails: its finding (`name: FAILED (measured vs limit); fix`) is the
# whole report, with no traceback or assertion introspection around it.

def fail(message: str) -> NoReturn:
    """Fail the check with its finding."""
    pytest.fail(message, pytrace=False)


def require(ok: bool, message: str) -> None:
    """Fail the check with its finding unless `ok`."""
    if not ok:
        fail(message)


def verdict(problems: list[str]) -> None:
    """Fail the check with one line per problem, if there are any."""
    if problems:
        fail("\n".join(problems))
