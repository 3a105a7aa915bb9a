"""One-pass CPU kernel for the sparsity probe on bf16 bit patterns.

The torch formulation of the probe walks each block a dozen times (bit tests, casts to
fp32, differences, counts, packing); on a 2-core machine that made the pass ~3× slower
than reading the checkpoint. This kernel reads each pair of stored entries once (bf16, or
fp32 rounded to bf16 on the fly) and produces, in the same pass, the packed η-rule mask, its
count, the count under the absolute tolerance rule and each side's number of non-finite
entries: ~1 ns per entry on 2 threads, so the pass is limited by reading the bytes.

Semantics are exactly those of :mod:`offprincipal.metrics.sparsity` on bf16 codes: the η
rule is "the codes differ", with ``+0 == -0`` (for finite values this *is* the η rule, as
``eta`` lies below bf16's smallest relative gap; for inf/NaN it is the definition, see
``sparsity``). The absolute rule is ``|y - x| > atol`` in fp32 for two finite values and
"the codes differ" when either side is inf/NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
import torch

#: packed bytes per parallel task (128k entries): large enough to amortise scheduling,
#: small enough that both threads stay busy on the smaller tensors
_TASK_BYTES = 1 << 14


class ProbeCounts(NamedTuple):
    changed_eta: int  # entries changed under the η rule
    changed_abs: int  # entries changed under |Δ| > atol
    nonfinite_base: int  # inf/NaN entries of the first tensor (after rounding to bf16)
    nonfinite_ft: int  # ... of the second


# The kernels read bf16 → fp32 by writing the pattern into the high half of a uint32 and
# reading it back through a float32 view of the same buffer: exact, and branch-free.


@numba.njit(inline="always", cache=True)
def _bf16_at(arr, i, is_fp32):  # pragma: no cover - compiled
    """bf16 bit pattern of entry ``i``: a stored bf16 pattern as is; a stored fp32 pattern
    rounded to nearest even, as torch's ``Tensor.to(torch.bfloat16)``, any NaN to the canonical
    0x7FC0 (``sparsity.round_to_bf16``)."""
    u = np.uint32(arr[i])
    if not is_fp32:
        return u
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return np.uint32(0x7FC0)
    return (u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16


@numba.njit(inline="always", cache=True)
def _changed(x, y):  # pragma: no cover - compiled
    """The η rule on two bf16 codes: they differ, and are not the two zeros."""
    return np.int32((x != y) & (((x | y) & 0x7FFF) != 0))


@numba.njit(nogil=True, cache=True)
def _exact_span(a, b, a32, b32, start, stop, atol, bits):  # pragma: no cover - compiled
    """Both rules entry by entry over ``a[start:stop]`` (``start`` a multiple of 8), with
    each side's non-finite count: for spans holding inf/NaN and for the last, partial byte."""
    buf = np.empty(2, np.uint32)
    val = buf.view(np.float32)
    ce = 0
    ca = 0
    na = 0
    nb = 0
    for byte in range(start // 8, (stop + 7) // 8):
        packed = 0
        for i in range(byte * 8, min(stop, byte * 8 + 8)):
            x = _bf16_at(a, i, a32)
            y = _bf16_at(b, i, b32)
            changed = _changed(x, y)
            packed |= changed << (i - byte * 8)
            ce += changed
            x_bad = (x & 0x7F80) == 0x7F80
            y_bad = (y & 0x7F80) == 0x7F80
            na += x_bad
            nb += y_bad
            if x_bad or y_bad:  # inf/NaN: changed iff the codes differ (inf - inf is no Δ)
                ca += x != y
            else:
                buf[0] = x << 16
                buf[1] = y << 16
                ca += abs(val[1] - val[0]) > atol
        bits[byte] = packed
    return ce, ca, na, nb


@numba.njit(parallel=True, nogil=True, cache=True)
def _probe(a, b, a32, b32, atol, bits):  # pragma: no cover - compiled; tested through bf16_probe
    n = a.size
    full_bytes = n // 8
    ntasks = (full_bytes + _TASK_BYTES - 1) // _TASK_BYTES
    counts = np.zeros((ntasks + 1, 4), np.int64)
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
                changed = _changed(x, y)
                nonfinite |= ((x & 0x7F80) == 0x7F80) | ((y & 0x7F80) == 0x7F80)
                packed |= changed << j
                ce += changed
                buf[2 * j] = x << 16
                buf[2 * j + 1] = y << 16
            for j in range(8):  # finite here, so `>` is `not <=`; identical patterns give Δ = 0
                ca += abs(val[2 * j + 1] - val[2 * j]) > atol
            bits[byte] = packed
        if nonfinite:  # rare: redo the span entry by entry (absolute rule, non-finite counts)
            counts[t, 0], counts[t, 1], counts[t, 2], counts[t, 3] = _exact_span(
                a, b, a32, b32, lo * 8, hi * 8, atol, bits
            )
        else:
            counts[t, 0] = ce
            counts[t, 1] = ca
    if n % 8:
        counts[ntasks, 0], counts[ntasks, 1], counts[ntasks, 2], counts[ntasks, 3] = _exact_span(
            a, b, a32, b32, full_bytes * 8, n, atol, bits
        )
    return counts.sum(axis=0)


_PATTERNS = {torch.bfloat16: (torch.int16, np.uint16), torch.float32: (torch.int32, np.uint32)}


def bf16_probe(w0: torch.Tensor, w1: torch.Tensor, bits: np.ndarray, *, atol: float) -> ProbeCounts:
    """Fill ``bits`` (``(numel + 7) // 8`` bytes, little bit order) with the η-rule mask of two
    contiguous CPU tensors, each bf16 or fp32 (fp32 rounded to bf16 first, as the paper's
    probe does), and count changes under both rules and each side's inf/NaN entries.

    The η rule needs no ``eta`` here: for any ``eta`` below bf16's smallest relative gap
    (2**-8) it is bitwise equality of the codes; the caller checks that premise."""
    if w0.dtype not in _PATTERNS or w1.dtype not in _PATTERNS:
        raise ValueError(f"bf16_probe needs bf16 or fp32 tensors, got {w0.dtype} and {w1.dtype}")
    if w0.numel() != w1.numel() or bits.size != (w0.numel() + 7) // 8:
        raise ValueError("bf16_probe: sizes of the two tensors and the bit buffer do not agree")

    def patterns(w: torch.Tensor) -> np.ndarray:  # unsigned, so bit tests see no negative values
        signed, unsigned = _PATTERNS[w.dtype]
        return w.detach().reshape(-1).view(signed).numpy().view(unsigned)

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    counts = _probe(
        patterns(w0), patterns(w1), w0.dtype == torch.float32, w1.dtype == torch.float32, np.float32(atol), bits
    )
    return ProbeCounts(*(int(c) for c in counts))


def precompile() -> None:
    """Compile the kernel for every pair of stored dtypes into numba's on-disk cache, so a
    pipeline's first sparsity pass does not spend ~8 s (2 cores) compiling it; the install
    runs this once (Makefile)."""
    for d0 in _PATTERNS:
        for d1 in _PATTERNS:
            bf16_probe(torch.zeros(9, dtype=d0), torch.zeros(9, dtype=d1), np.empty(2, np.uint8), atol=1e-5)
