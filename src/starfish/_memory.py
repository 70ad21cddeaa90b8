"""Memory given back to the system as soon as a big record is done with (`starfish jobs
export`), not kept by the allocator."""

from __future__ import annotations

import contextlib

__all__ = ["return_big_blocks"]

M_MMAP_THRESHOLD = -3
BIG_BLOCK = 1 << 20


def return_big_blocks() -> None:
    """glibc raises its mmap threshold the first time a big block is freed, after which freed
    multi-megabyte strings stay in the heap and count in the RSS (a JSONL export of 8 MB
    records peaked at 3.2 records instead of 2.4). A fixed threshold serves blocks of a
    megabyte or more by mmap, returned at once. For a process of ours (the CLI) only; a
    no-op where glibc's `mallopt` is not there."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, BIG_BLOCK)
