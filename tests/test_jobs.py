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
