"""glibc's heap, set to keep the memory a training step frees (issue #15).

PyTorch's CPU tensors come from malloc, and a training step frees and allocates the same
activations and gradients every batch. With glibc's defaults, malloc gives the top of its heap
back to the kernel whenever more than twice its (adaptive) mmap threshold lies free there, and
serves blocks above that threshold from fresh mmaps; either way the next step pays a page fault
for each 4 KiB page it writes. On the digits CNN that was 0 to 34,000 faults an epoch
(10-17% of its CPU time in the kernel), about half of them in the backward pass, which allocates
the gradients of the activations; how many depends on the heap's history, so two loops running
the same ops in one process differed by up to 15% in their backward pass. Fixed thresholds (a
large trim threshold, blocks up to 32 MiB from the heap) keep that memory for the next step, as
PyTorch's CUDA caching allocator does on a GPU: no faults after the first steps, and the same
numbers (where a tensor lies never changes a result: PyTorch aligns each to 64 bytes itself).

The cost: the process keeps up to TRIM_THRESHOLD of freed memory instead of returning it.
`DSLC_MALLOC=default` leaves glibc's settings alone. Other C libraries (macOS, musl) and
processes started under another allocator (LD_PRELOAD jemalloc or tcmalloc) are left as they are.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1   # glibc's malloc.h
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 << 20
MMAP_THRESHOLD = 32 << 20   # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit): bigger blocks stay mmaps

_done = False


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (once per process); False where it is
    not glibc, the environment says `DSLC_MALLOC=default`, or glibc refused."""
    global _done
    if _done:
        return True
    if os.environ.get("DSLC_MALLOC") == "default" or platform.libc_ver()[0] != "glibc":
        return False
    if "malloc" in os.environ.get("LD_PRELOAD", ""):   # jemalloc, tcmalloc: they keep their own memory
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt returns 1 on success; either setting also turns off the adaptive thresholds
    _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
