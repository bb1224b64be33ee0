"""``batched``: the one place inputs are grouped for a forward pass."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def batched(iterable: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of ``n`` items in order, the last one shorter when the items run out.

    ``itertools.batched`` does this from Python 3.12 on; the project supports 3.10+.
    """
    if n < 1:
        raise ValueError("batch size must be at least 1")
    iterator = iter(iterable)
    while batch := list(itertools.islice(iterator, n)):
        yield batch
