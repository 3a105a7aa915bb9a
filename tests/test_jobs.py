"""The job setup's memory setting, read back from glibc's own accounting."""

import subprocess
import sys

import pytest

_PROBE = """
import ctypes, sys
from offprincipal.jobs import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "on":
    assert reuse_freed_memory()
import torch
x = torch.ones(16 * 2**20)  # 64 MB, above glibc's largest mmap threshold
del x
info = libc.mallinfo2()
print(info.fordblks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_reuse_freed_memory_keeps_a_freed_matrix_in_the_heap():
    """glibc's own accounting (mallinfo2): without the setting a 64 MB tensor is mapped on
    its own and gone when freed; with it, it is served from the heap and stays there free."""
    def probe(mode):
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert probe("off") < 64 * 2**20 <= probe("on")


_THREAD_PROBE = """
import ctypes, sys, threading
from offprincipal.jobs import reuse_freed_memory
if sys.argv[1] == "on":
    assert reuse_freed_memory(shared_arena=True)
import torch

libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
found = {}

def worker():
    x = torch.empty(8 * 2**20)  # 32 MB: fits a thread arena's 64 MB heaps
    found["in_main_heap"] = x.data_ptr() < libc.sbrk(0)

thread = threading.Thread(target=worker)
thread.start()
thread.join()
print(int(found["in_main_heap"]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_shared_arena_serves_worker_threads_from_the_main_heap():
    """A worker thread's 32 MB block lies in the main heap (below the program break) with
    the shared arena, and in a thread arena's mapped heap (above it) without: only the main
    heap keeps freed blocks for the next matrix."""
    def in_main_heap(mode):
        out = subprocess.run([sys.executable, "-c", _THREAD_PROBE, mode], capture_output=True, text=True, check=True)
        return out.stdout.strip() == "1"

    assert in_main_heap("on") and not in_main_heap("off")
