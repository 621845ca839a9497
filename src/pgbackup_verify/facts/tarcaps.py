"""Bounds on what one tar archive's headers may make this process hold, for tarfile's stream mode.

tarfile reads a pax header's, a GNU long name's or a sparse map's whole payload in one piece, at the
size its header claims (a 3 MB archive can claim 3 GiB of pax data), and keeps every member's TarInfo.
`capped_tarinfo()` gives tarfile a TarInfo class (its public `tarinfo=` argument) whose public
`fromtarfile` reads each header through a capped view of the stream: one header's data at most
MAX_HEADER_DATA, all of them MAX_HEADERS_TOTAL, at most MAX_MEMBERS members. Over a bound it raises
ArchiveLimit, a TarError (tarfile passes it on; a HeaderError would end the archive silently).
Honest archives stay far below these.
"""

from __future__ import annotations

import tarfile
from typing import Any, Self

MAX_HEADER_DATA = 1 << 20  # one pax header / GNU long name or link / sparse map
MAX_HEADERS_TOTAL = 64 << 20  # all header data of the archive together
MAX_MEMBERS = 100_000


class ArchiveLimit(tarfile.TarError):
    """An archive's headers are beyond the bounds above; str() names the bound."""


class _CappedFile:
    """The tar stream as the header reader sees it: each read bounded, their sum too."""

    def __init__(self, fileobj: Any, budget: list[int]) -> None:
        self._f, self._budget = fileobj, budget

    def read(self, n: int) -> bytes:
        if n > MAX_HEADER_DATA:
            raise ArchiveLimit(f"a member header claims {n} bytes of extended header data (pax, GNU long name), "
                               f"over the {MAX_HEADER_DATA >> 20} MiB limit")
        self._budget[0] += n
        if self._budget[0] > MAX_HEADERS_TOTAL:
            raise ArchiveLimit(f"member headers exceed {MAX_HEADERS_TOTAL >> 20} MiB in all")
        return bytes(self._f.read(n))

    def tell(self) -> int:
        return int(self._f.tell())


class _CappedTarFile:
    """Stands in for the TarFile while one member header is read (TarInfo.fromtarfile's argument):
    the same TarFile, except that its `fileobj` is capped."""

    def __init__(self, tf: tarfile.TarFile, budget: list[int]) -> None:
        object.__setattr__(self, "_tf", tf)
        object.__setattr__(self, "fileobj", _CappedFile(tf.fileobj, budget))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tf, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._tf, name, value)


def capped_tarinfo() -> type[tarfile.TarInfo]:
    """A TarInfo class for ONE archive (`tarfile.open(..., tarinfo=capped_tarinfo())`) whose header
    reads stay within MAX_HEADER_DATA / MAX_HEADERS_TOTAL and which stops after MAX_MEMBERS members."""
    budget = [0]
    members = [0]

    class CappedTarInfo(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tf: Any) -> Self:
            if not isinstance(tf, _CappedTarFile):  # pax and long names recurse with the stand-in itself
                members[0] += 1
                if members[0] > MAX_MEMBERS:
                    raise ArchiveLimit(f"more than {MAX_MEMBERS} members")
                tf = _CappedTarFile(tf, budget)
            return super().fromtarfile(tf)

    return CappedTarInfo
