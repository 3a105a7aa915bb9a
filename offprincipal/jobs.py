"""What every workflow script does first: send logs to the rule's log file, honour threads,
keep freed memory for the next matrix."""

from __future__ import annotations

import ctypes
import logging
import platform
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def setup_job(log_path: str, threads: int | None = None) -> None:
    stream = open(log_path, "w", buffering=1)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    reuse_freed_memory()
    if threads:
        import torch

        torch.set_num_threads(threads)


def reuse_freed_memory() -> bool:
    """Serve large allocations from the heap and keep what is freed there (glibc only;
    returns whether it applied).

    glibc maps every allocation above 32 MB afresh and unmaps it when freed, so each
    matrix-sized temporary of a pass pays a page fault per 4 KiB page it touches: the fp32
    update ``w1 − w0`` of a 1.5B MLP matrix (bf16, 13.8M entries) takes 66 ms instead of
    26 ms, and such steps make up much of a pass's work between SVDs. Reusing freed heap memory keeps the process at its peak
    footprint, which is what a scheduler has to grant it anyway."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
