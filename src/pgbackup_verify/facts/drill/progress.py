"""Progress of a long drill: where it says so depends on who is watching.

- On a terminal: one line, rewritten in place at most once a second (payload restored of the expected
  payload, rows, share of the stored dump read, elapsed time and ETA).
- Not on a terminal (cron, a log file): one plain line a minute.
- Quiet (-q), or a drill shorter than MIN_SECONDS: nothing at all.

The restore calls it as a `restore.Progress` (payload sent, stored bytes read, stored size, seconds);
where the text goes is the caller's choice (`write`), so this module never touches the terminal itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

MIN_SECONDS = 10.0  # a drill shorter than this shows no progress at all
TTY_EVERY = 1.0
LOG_EVERY = 60.0


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class DrillProgress:
    """A `restore.Progress` that writes progress lines through `write`."""

    def __init__(self, name: str, write: Callable[[str], None], tty: bool, quiet: bool = False,
                 payload_estimate: int | None = None) -> None:
        self.name, self.write, self.tty, self.quiet = name, write, tty, quiet
        self.payload_estimate = payload_estimate
        self.every = TTY_EVERY if tty else LOG_EVERY
        self.first = MIN_SECONDS if tty else LOG_EVERY
        self.last: float | None = None  # seconds of the last line written
        self.width = 0  # of the line on the terminal, to blank what a shorter line leaves
        self.rows: Callable[[], int] | None = None

    def watch_rows(self, rows: Callable[[], int]) -> None:
        """The restore hands over how to read its row count (rows of the COPY blocks read so far)."""
        self.rows = rows

    def line(self, sent: int, read: int, size: int | None, seconds: float) -> str:
        parts = [f"restore drill {self.name}: {_bytes(sent)}"]
        if not (sent or read):  # pg_restore tells nothing while it runs
            parts[0] = f"restore drill {self.name}: restoring"
        elif self.payload_estimate:
            parts[0] += f" of ~{_bytes(self.payload_estimate)} payload"
        else:
            parts[0] += " of payload"
        if self.rows is not None:
            parts.append(f"{self.rows():,} rows")
        share = read / size if size and read else (sent / self.payload_estimate if self.payload_estimate and sent
                                                   else None)
        if share is not None:
            parts.append(f"{100 * min(share, 1):.0f}% of the dump read")
        parts.append(_duration(seconds))
        if share:
            parts.append(f"ETA {_duration(seconds * max(0.0, 1 - share) / share)}")
        return ", ".join(parts)

    def __call__(self, sent: int, read: int, size: int | None, seconds: float) -> None:
        if self.quiet or seconds < self.first:
            return
        if self.last is not None and seconds - self.last < self.every:
            return
        self.last = seconds
        text = self.line(sent, read, size, seconds)
        if self.tty:
            # The first line starts on a line of its own: pytest may have left a half-written line.
            lead = "\n" if self.width == 0 else ""
            pad = " " * max(0, self.width - len(text))
            self.width = len(text)
            self.write(f"{lead}\r{text}{pad}")
        else:
            self.write(text + "\n")

    def finish(self) -> None:
        """End the terminal line, so that what follows starts on a line of its own."""
        if self.tty and self.last is not None:
            self.write("\n")
            self.last, self.width = None, 0


def for_stream(name: str, stream: TextIO, quiet: bool, payload_estimate: int | None = None) -> DrillProgress:
    """Progress written to `stream`: a line in place on a terminal, a line a minute otherwise."""
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    try:
        tty = stream.isatty()
    except ValueError:  # a closed stream: nobody is watching
        tty, quiet = False, True
    return DrillProgress(name, write, tty, quiet, payload_estimate)
