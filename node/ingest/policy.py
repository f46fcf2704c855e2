"""Who may associate: the calling-AE allow-list (``node.allowed_callers``).

Entries are ``"AE"`` (that AE title from any host) or ``"AE@host"`` (only
from that host; a host name is resolved to its addresses once, at start).
An empty list lets any caller in.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
from typing import Iterable

__all__ = ["CallerPolicy"]

log = logging.getLogger("cardionode.ingest")


def _addresses(host: str) -> frozenset[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        log.warning("allowed_callers: host does not resolve; matched literally", extra={"host": host,
                                                                                       "error": str(exc)})
        return frozenset({host})
    return frozenset({host} | {str(info[4][0]) for info in infos})


@dataclasses.dataclass(frozen=True)
class CallerPolicy:
    """Parsed allow-list: (AE title, allowed addresses or None for any host)."""

    entries: tuple[tuple[str, frozenset[str] | None], ...] = ()

    @classmethod
    def from_config(cls, allowed_callers: Iterable[str]) -> "CallerPolicy":
        entries = []
        for item in allowed_callers:
            ae, sep, host = item.partition("@")
            entries.append((ae.strip(), _addresses(host.strip()) if sep else None))
        return cls(tuple(entries))

    @property
    def open(self) -> bool:
        return not self.entries

    def allows(self, ae_title: str, address: str | None) -> bool:
        if self.open:
            return True
        ae_title = ae_title.strip()
        return any(ae == ae_title and (hosts is None or address in hosts) for ae, hosts in self.entries)

    def address_allowed(self, address: str | None) -> bool:
        """False when no entry can ever admit ``address`` (every entry is ``AE@host`` and none names
        it): the connection can be closed when it is accepted, before anything is read."""
        return self.open or any(hosts is None or address in hosts for _ae, hosts in self.entries)

    def titles_for(self, address: str | None) -> list[str]:
        """AE titles allowed from ``address`` (for pynetdicom's calling-AE check)."""
        return [ae for ae, hosts in self.entries if hosts is None or address in hosts]
