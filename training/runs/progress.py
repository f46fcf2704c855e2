"""One quiet progress bar: drawn on a terminal at most every few seconds, never written into logs.

tqdm with ``disable=None`` switches itself off when stderr is not a terminal (a log file, CI, a pipe),
so redirected output holds the per-epoch log lines only, not thousands of ``\\r`` redraws; postfix
updates never force a redraw.
"""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(it: Iterable[T], total: int | None, desc: str, enabled: bool = True) -> Iterator[T]:
    if not enabled:
        return iter(it)
    from tqdm import tqdm

    return iter(tqdm(it, total=total, desc=desc, unit="it", leave=False, file=sys.stderr, disable=None,
                     mininterval=2.0, dynamic_ncols=True))
