"""glibc's malloc told to keep freed memory for reuse: the offline commands' passes then touch no fresh pages.

A packed pass of a few thousand tokens allocates intermediates of tens of MB in every layer. By default glibc
serves allocations that large with fresh mmap'd pages and unmaps them on free (and trims freed memory off the
heap's top), so every layer of every pass pays a page fault for each 4 KB it writes: on the benchmarks'
mid-sized model on a CPU, 130,000-280,000 faults and 0.3-1.0 s of a 3-4 s curve. With mmap off and the trim
threshold at 1 GiB, freed memory stays in the heap and the next layer, pass or batch reuses it (measured:
no faults from the third pass on). The resident memory then stays near its peak until the process ends, which suits a
command that runs one job and exits. The commands own their process; the node and in-process learners leave
the allocator as their host process set it.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every allocation from its heap and keep what is freed; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl): its allocator is left alone
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
