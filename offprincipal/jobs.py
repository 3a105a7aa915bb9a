"""What every workflow script does first: send logs to the rule's log file, honour threads,
keep freed memory for the next matrix."""

from __future__ import annotations

import ctypes
import logging
import platform
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def setup_job(log_path: str, threads: int | None = None, *, shared_arena: bool = False) -> None:
    """``shared_arena``: for a pass that computes in worker threads (:func:`reuse_freed_memory`);
    the script then calls this before importing numpy or torch."""
    reuse_freed_memory(shared_arena=shared_arena)
    stream = open(log_path, "w", buffering=1)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    if threads:
        import torch

        torch.set_num_threads(threads)


def reuse_freed_memory(*, shared_arena: bool = False) -> bool:
    """Serve large allocations from the heap and keep what is freed there (glibc only;
    returns whether it applied).

    glibc maps every allocation above 32 MB afresh and unmaps it when freed, so each
    matrix-sized temporary of a pass pays a page fault per 4 KiB page it touches: the fp32
    update ``w1 − w0`` of a 1.5B MLP matrix (bf16, 13.8M entries) takes 66 ms instead of
    26 ms, and such steps make up much of a pass's work between SVDs. Reusing freed heap memory keeps the process at its peak
    footprint, which is what a scheduler has to grant it anyway.

    ``shared_arena``: one arena for all threads. A worker thread's own arena grows by mapping 64 MB heaps,
    so its matrix-sized blocks were still mapped and unmapped per matrix (the geometry
    pass's two workers on a 1.5B pair: 5.1M page faults and 11.7 s of system time, against
    0.3M and 2.9 s with one arena). The pass's threads allocate a few large blocks per
    matrix, so sharing one arena's lock costs nothing measurable there; jobs whose threads
    make many small allocations (tokenizers, data loaders) keep glibc's arenas. The limit
    binds only threads that have not allocated yet: an arena made earlier (numpy's BLAS
    pool makes one at import) is handed out in turn, so this must run before those imports."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), *([(_M_ARENA_MAX, 1)] if shared_arena else [])]
    return all([bool(libc.mallopt(param, value)) for param, value in settings])
