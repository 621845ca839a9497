"""Which files a cron command tests before it runs something: `[ -x X ] && X` and its kin.

Debian's own cron.d files guard their commands so that a package removed but not purged leaves a
harmless line: `[ -x /usr/lib/php/sessionclean ] && ...`, `test -x X && X`, `[[ -x X ]] && X`,
`if [ -x X ]; then X; fi`, `command -v X >/dev/null && X`. While X is absent such a line runs
nothing: it is no missing script. This module reads the shell tokens of `cronline` and says, for
each simple command, which tested files must exist for it to run at all.

A guard holds over what the shell runs only when the test succeeded: the rest of its `&&` list
(up to `;`, `&`, a newline or `||` at its own level, so into an `if`/`{ }` that follows it), and
the `then` part of an `if`/`while` whose condition is an `&&` chain of tests. A negated test
(`!`, `[ ! -x X ]`), an `||` in the condition or `until` guards nothing. Pure text work.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgbackup_verify.facts.cronline import Tok

# Tests that fail when the file is absent, so what they guard does not run then.
FILE_TESTS = frozenset({"-x", "-e", "-f", "-r", "-s"})
_OPENERS = {"if": "if", "while": "if", "until": "until", "{": "group", "for": "other", "case": "other",
            "select": "other"}
_CLOSERS = {"fi", "}", "done", "esac"}


def tested_file(words: list[Tok]) -> Tok | None:
    """The file a simple command tests for, or None: `[ -x P ]`, `[[ -x P ]]`, `test -x P` (any
    path to test), `command -v P`; -e, -f, -r and -s fail on an absent file just as -x does."""
    v = [w.value for w in words]
    if any(w.dynamic for w in words[:2]) or len(v) < 3:
        return None
    name = posixpath.basename(v[0])
    if (name == "[" and v[-1] == "]") or (name == "[[" and v[-1] == "]]"):
        v = v[:-1]
    elif name == "command":
        return words[2] if v[1] == "-v" and len(v) == 3 and not words[2].dynamic else None
    elif name != "test":
        return None
    return words[2] if len(v) == 3 and v[1] in FILE_TESTS and not words[2].dynamic else None


@dataclass
class _Frame:
    kind: str  # "root", "if" (if/while), "until", "group", "other"
    andlist: list[Tok] = field(default_factory=list)  # tests the rest of the current && list runs behind
    cond: list[Tok] = field(default_factory=list)  # tests of an if/while condition read so far
    spoiled: bool = False  # the condition has `||`, `!` or is an until's: it guards nothing
    body: list[Tok] = field(default_factory=list)  # the condition's tests, while in its then/do part
    in_cond: bool = False
    or_seen: bool = False  # an `||` earlier in this and-or list: `A || [ -x P ] && P` runs P after A alone


class _Tracker:
    def __init__(self) -> None:
        self.stack = [_Frame("root")]
        self.words: list[Tok] = []
        self.negated = False

    @property
    def top(self) -> _Frame:
        return self.stack[-1]

    def in_effect(self) -> tuple[Tok, ...]:
        return tuple(t for f in self.stack for t in (*f.andlist, *f.body))

    def keyword(self, word: str) -> None:
        f = self.top
        if word == "!":
            self.negated = True
        elif word in _OPENERS:
            kind = _OPENERS[word]
            self.stack.append(_Frame(kind, in_cond=kind in ("if", "until"), spoiled=kind == "until"))
        elif word in ("then", "do") and f.in_cond:
            f.body, f.in_cond, f.andlist = ([] if f.spoiled else f.cond), False, []
        elif word == "elif":
            f.body, f.cond, f.andlist, f.in_cond, f.spoiled = [], [], [], True, False
        elif word == "else":
            f.body, f.andlist = [], []
        elif word in _CLOSERS and len(self.stack) > 1:
            self.stack.pop()

    def end_command(self, op: str) -> None:
        """The simple command read so far ends at control operator `op`."""
        tested = None if self.negated else tested_file(self.words)
        f = self.top
        if tested is not None and op == "&&" and not f.or_seen:
            f.andlist.append(tested)
        if f.in_cond:
            if op == "||" or self.negated:
                f.spoiled = True
            elif tested is not None:
                f.cond.append(tested)
        if op in (";", "\n", "&", "||", ";;"):
            f.andlist, f.or_seen = [], op == "||"
        if op == "(":
            self.stack.append(_Frame("group"))
        elif op == ")" and len(self.stack) > 1:
            self.stack.pop()
        self.words, self.negated = [], False


def guards(toks: list[Tok], reserved: frozenset[str] | set[str]) -> dict[int, tuple[Tok, ...]]:
    """For the first word of each simple command (by token index): the tested files it runs behind."""
    tr = _Tracker()
    out: dict[int, tuple[Tok, ...]] = {}
    skip = False
    for i, t in enumerate(toks):
        if skip:
            skip = False
            continue
        if t.kind == "redir":
            skip = True  # its target word is no part of the command
        elif t.kind == "op":
            tr.end_command(t.value)
        elif not tr.words and not t.dynamic and t.value in reserved:
            tr.keyword(t.value)
        else:
            if not tr.words:
                out[i] = tr.in_effect()
            tr.words.append(t)
    return out
