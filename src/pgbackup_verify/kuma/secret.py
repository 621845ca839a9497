"""A push token or a password that no repr, str, f-string or traceback local ever shows.

pytest's `-l` and `--tb=long` print every local of every frame of a failure, and a dataclass repr
prints every field: holding the value in a plain `str` leaks it into the console, the HTML and the
JUnit XML. Only `reveal()` returns it, at the one place that sends it (inline, never stored).
"""

from __future__ import annotations

import os

from pgbackup_verify.facts.childenv import never_pass

REDACTED = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def from_env(cls, name: str) -> Secret | None:
        """The variable's value, or None when it is unset or empty."""
        never_pass(name)  # whatever its name, no child process gets it
        value = os.environ.get(name)
        return cls(value) if value else None

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the secret replaced (for a server's echo of a URL)."""
        return text.replace(self._value, REDACTED) if self._value else text

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
