"""One-pass CPU kernel for the sparsity probe on bf16 bit patterns.

The torch formulation of the probe walks each block a dozen times (bit tests, casts to
fp32, differences, counts, packing); on a 2-core machine that made the pass ~3× slower
than reading the checkpoint. This kernel reads each pair of stored entries once (bf16, or
fp32 rounded to bf16 on the fly) and produces, in the same pass, the packed η-rule mask, its
count and the count under the absolute tolerance rule: ~1 ns per entry on 2 threads, so the
pass is limited by reading the bytes.

Semantics are exactly those of :mod:`offprincipal.metrics.sparsity`: for finite values the
η rule is bitwise inequality with ``+0 == -0`` (``eta`` below bf16's smallest relative
gap); an entry where either side is inf/NaN takes the η rule itself in fp32. The absolute
rule ``not |y - x| <= atol`` is evaluated in fp32 (torch's promotion for a fp32 tensor and
a Python float).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

#: packed bytes per parallel task (128k entries): large enough to amortise scheduling,
#: small enough that both threads stay busy on the smaller tensors
_TASK_BYTES = 1 << 14


# The kernels read bf16 → fp32 by writing the pattern into the high half of a uint32 and
# reading it back through a float32 view of the same buffer: exact, and branch-free.


@numba.njit(inline="always", cache=True)
def _bf16_at(arr, i, is_fp32):  # pragma: no cover - compiled
    """bf16 bit pattern of entry ``i``: a stored bf16 pattern as is; a stored fp32 pattern
    rounded to nearest even, as torch's ``Tensor.to(torch.bfloat16)`` (any NaN → 0x7FC0)."""
    u = np.uint32(arr[i])
    if not is_fp32:
        return u
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return np.uint32(0x7FC0)
    return (u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16


@numba.njit(nogil=True, cache=True)
def _exact_span(a, b, a32, b32, start, stop, eta, atol, bits):  # pragma: no cover - compiled
    """Both rules entry by entry in fp32 over ``a[start:stop]`` (``start`` a multiple of 8):
    for spans holding inf/NaN and for the last, partial byte."""
    buf = np.empty(2, np.uint32)
    val = buf.view(np.float32)
    ce = 0
    ca = 0
    for byte in range(start // 8, (stop + 7) // 8):
        packed = 0
        for i in range(byte * 8, min(stop, byte * 8 + 8)):
            buf[0] = _bf16_at(a, i, a32) << 16
            buf[1] = _bf16_at(b, i, b32) << 16
            d = abs(val[1] - val[0])
            if not (d <= eta * max(abs(val[0]), abs(val[1]))):
                packed |= 1 << (i - byte * 8)
                ce += 1
            if not (d <= atol):
                ca += 1
        bits[byte] = packed
    return ce, ca


@numba.njit(parallel=True, nogil=True, cache=True)
def _probe(a, b, a32, b32, eta, atol, bits):  # pragma: no cover - compiled; tested through bf16_probe
    n = a.size
    full_bytes = n // 8
    ntasks = (full_bytes + _TASK_BYTES - 1) // _TASK_BYTES
    counts_eta = np.zeros(ntasks + 1, np.int64)
    counts_abs = np.zeros(ntasks + 1, np.int64)
    for t in numba.prange(ntasks):
        lo = t * _TASK_BYTES
        hi = min(full_bytes, lo + _TASK_BYTES)
        buf = np.empty(16, np.uint32)
        val = buf.view(np.float32)
        ce = 0
        ca = 0
        nonfinite = np.uint32(0)
        for byte in range(lo, hi):
            packed = 0
            for j in range(8):
                x = _bf16_at(a, byte * 8 + j, a32)
                y = _bf16_at(b, byte * 8 + j, b32)
                # finite bf16: the η rule is "bit patterns differ", with +0 == -0
                changed = np.int32((x != y) & (((x | y) & 0x7FFF) != 0))
                nonfinite |= ((x & 0x7F80) == 0x7F80) | ((y & 0x7F80) == 0x7F80)
                packed |= changed << j
                ce += changed
                buf[2 * j] = x << 16
                buf[2 * j + 1] = y << 16
            for j in range(8):  # finite here, so `>` is `not <=`; identical patterns give Δ = 0
                ca += abs(val[2 * j + 1] - val[2 * j]) > atol
            bits[byte] = packed
        if nonfinite:  # rare: redo the span with the η rule itself
            ce, ca = _exact_span(a, b, a32, b32, lo * 8, hi * 8, eta, atol, bits)
        counts_eta[t] = ce
        counts_abs[t] = ca
    if n % 8:
        counts_eta[ntasks], counts_abs[ntasks] = _exact_span(a, b, a32, b32, full_bytes * 8, n, eta, atol, bits)
    return counts_eta.sum(), counts_abs.sum()


_PATTERNS = {torch.bfloat16: (torch.int16, np.uint16), torch.float32: (torch.int32, np.uint32)}


def bf16_probe(w0: torch.Tensor, w1: torch.Tensor, bits: np.ndarray, *, eta: float, atol: float) -> tuple[int, int]:
    """Fill ``bits`` (``(numel + 7) // 8`` bytes, little bit order) with the η-rule mask of two
    contiguous CPU tensors, each bf16 or fp32 (fp32 rounded to bf16 first, as the paper's
    probe does); return (changed under η, changed under ``|Δ| > atol``)."""
    if w0.dtype not in _PATTERNS or w1.dtype not in _PATTERNS:
        raise ValueError(f"bf16_probe needs bf16 or fp32 tensors, got {w0.dtype} and {w1.dtype}")
    if w0.numel() != w1.numel() or bits.size != (w0.numel() + 7) // 8:
        raise ValueError("bf16_probe: sizes of the two tensors and the bit buffer do not agree")

    def patterns(w: torch.Tensor) -> np.ndarray:  # unsigned, so bit tests see no negative values
        signed, unsigned = _PATTERNS[w.dtype]
        return w.detach().reshape(-1).view(signed).numpy().view(unsigned)

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    changed_eta, changed_abs = _probe(
        patterns(w0), patterns(w1), w0.dtype == torch.float32, w1.dtype == torch.float32,
        np.float32(eta), np.float32(atol), bits,
    )
    return int(changed_eta), int(changed_abs)
