"""Update masks: which stored weights did fine-tuning change?

Three rules, side by side because the paper (App. E.1) shows they disagree:

* ``eta_mask`` — the paper's bf16-aware probe (Def. 2.1/2.2): an entry changed iff
  ``|w1 - w0| > eta * max(|w0|, |w1|)`` with ``eta = 1e-3``.
* ``bitwise_mask`` — stored bf16 bit patterns differ (``+0`` and ``-0`` count as equal).
  For bf16 inputs this equals the η rule: the smallest relative gap between distinct bf16
  values is 2**-8 > 1e-3 (App. E.2; tested exhaustively in tests/test_sparsity.py).
  It is a single integer comparison, so it is the fast path for bf16 pairs.
* ``abs_mask`` — Mukherjee et al. 2025's fixed absolute tolerance ``|w1 - w0| > atol``
  (``atol = 1e-5``), which misses real bf16 changes of weights with ``|w| < ~2.5e-3``.

Non-finite values
-----------------
Taken literally, both formulas misjudge inf and NaN: ``inf <= 1e-3 * inf`` holds, so a weight
that became ``inf`` (or an fp32 value that rounds to bf16 ``inf``) would count as unchanged,
while ``inf - inf`` and anything involving NaN is NaN, so a bitwise-identical inf or NaN would
count as changed. Both rules therefore decide an entry where **either side is inf or NaN** by
**bitwise equality of the compared codes**: the bf16 codes for bf16 data (after rounding an
fp32 side to bf16), the fp32 codes of the compared values otherwise. So ``+inf == +inf``,
``+inf != -inf``, finite → inf is a change, and NaN equals NaN only with the same code (sign
and payload): two NaNs with different payloads are different stored weights. An fp32 NaN has no
bf16 code of its own, so rounding fp32 to bf16 (:func:`round_to_bf16`) maps every NaN to the
canonical quiet NaN ``0x7FC0`` (as c10's scalar conversion does; torch's vectorised CPU cast gives
``0xFFFF`` and CUDA's ``0x7FFF``, so the probe fixes one code). ``+0`` and ``-0`` stay equal. On bf16
codes the η rule is then exactly "codes differ, ±0 equal" for *every* pattern, which the
compiled kernel and the torch path below both implement.
"""

from __future__ import annotations

import numpy as np
import torch

from offprincipal.metrics.bf16_kernel import ProbeCounts, bf16_probe

BF16_MIN_RELATIVE_GAP = 2.0**-8  # smallest |a-b|/max(|a|,|b|) between distinct bf16 values
BF16_CANONICAL_NAN = 0x7FC0  # the code every fp32 NaN rounds to (module docstring)


def round_to_bf16(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded to bf16 (nearest even, ``Tensor.to``), every NaN as the canonical code
    ``0x7FC0``; a bf16 tensor is returned as is (its stored NaN codes are data)."""
    if w.dtype == torch.bfloat16:
        return w
    out = w.to(torch.bfloat16)
    nan = torch.isnan(out)
    if bool(nan.any()):
        out = out.clone() if out.data_ptr() == w.data_ptr() else out
        out.view(torch.int16)[nan] = BF16_CANONICAL_NAN
    return out


def _nonfinite_codes_differ(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(either side inf/NaN, the fp32 codes differ) for two fp32 tensors."""
    nonfinite = ~(torch.isfinite(a) & torch.isfinite(b))
    return nonfinite, a.view(torch.int32) != b.view(torch.int32)


def eta_mask(w0: torch.Tensor, w1: torch.Tensor, eta: float = 1e-3) -> torch.Tensor:
    """The η rule in fp32 (bf16 → fp32 is exact); entries with inf/NaN on either side are
    changed iff their codes differ (module docstring)."""
    a = w0.float()
    b = w1.float()
    unchanged = (b - a).abs() <= eta * torch.maximum(a.abs(), b.abs())
    nonfinite, differ = _nonfinite_codes_differ(a, b)
    return torch.where(nonfinite, differ, ~unchanged)


def bitwise_mask(w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """Stored bit patterns differ, with signed zeros treated as equal."""
    if w0.dtype != w1.dtype:
        raise ValueError(f"bitwise comparison needs equal dtypes, got {w0.dtype} and {w1.dtype}")
    if w0.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"bitwise_mask is defined for 16-bit floats, got {w0.dtype}")
    a = w0.view(torch.int16)
    b = w1.view(torch.int16)
    differ = a != b
    # +0 is 0x0000 and -0 is 0x8000: clearing the sign bit (x & 0x7FFF) maps both to 0.
    both_zero = ((a & 0x7FFF) == 0) & ((b & 0x7FFF) == 0)
    return differ & ~both_zero


def update_mask(w0: torch.Tensor, w1: torch.Tensor, eta: float = 1e-3) -> torch.Tensor:
    """The η-rule update mask, via the bitwise fast path when both sides are bf16 and
    ``eta`` lies below bf16's smallest relative gap (where the two rules coincide on every
    code, inf and NaN included)."""
    if w0.dtype == w1.dtype == torch.bfloat16 and 0 <= eta < BF16_MIN_RELATIVE_GAP:
        return bitwise_mask(w0, w1)
    return eta_mask(w0, w1, eta)


def abs_mask(w0: torch.Tensor, w1: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
    """Mukherjee et al.'s rule: ``not isclose(w1 - w0, 0, atol)``, i.e. ``|Δ| > atol``, in fp32;
    entries with inf/NaN on either side are changed iff their codes differ."""
    a = w0.float()
    b = w1.float()
    nonfinite, differ = _nonfinite_codes_differ(a, b)
    return torch.where(nonfinite, differ, (b - a).abs() > atol)


def sparsity(changed: int, total: int) -> float:
    """Update sparsity = fraction of entries left unchanged."""
    if total <= 0:
        raise ValueError("sparsity of an empty set of parameters is undefined")
    return 1.0 - changed / total


#: elements per block of ``compare_blocks`` (a multiple of 8, so packed bytes never straddle)
BLOCK = 1 << 22


def compare_blocks(
    w0: torch.Tensor,
    w1: torch.Tensor,
    *,
    eta: float = 1e-3,
    atol: float = 1e-5,
    cast_to_bf16: bool = True,
    block: int = BLOCK,
) -> tuple[np.ndarray, ProbeCounts]:
    """The sparsity pass for one tensor pair: the η-rule update mask (bit-packed, little bit
    order) and its :class:`ProbeCounts` (changed entries under the η rule and under
    ``|Δ| > atol``, inf/NaN entries of each side in the compared representation).

    bf16 tensors (and, with ``cast_to_bf16``, fp32 ones) on the CPU go through
    :func:`~offprincipal.metrics.bf16_kernel.bf16_probe` in one pass. Anything else (GPU
    tensors, other dtypes, fp32 compared unrounded) works in fixed-size blocks so memory
    stays O(block): a 233M-entry embedding would otherwise need several GB of fp32
    temporaries. Both paths apply the same rules, inf and NaN included (module docstring).
    """
    if block % 8:
        raise ValueError("block must be a multiple of 8")
    n = w0.numel()
    a, b = w0.reshape(-1), w1.reshape(-1)
    bits = np.empty((n + 7) // 8, dtype=np.uint8)
    bitwise_ok = 0 <= eta < BF16_MIN_RELATIVE_GAP
    on_cpu = a.device.type == "cpu" and b.device.type == "cpu"
    stored_16_or_32 = {a.dtype, b.dtype} <= ({torch.bfloat16, torch.float32} if cast_to_bf16 else {torch.bfloat16})
    if bitwise_ok and on_cpu and stored_16_or_32:
        # the common case: one pass of the compiled kernel (fp32 rounded to bf16 inside it)
        return bits, bf16_probe(a.contiguous(), b.contiguous(), bits, atol=atol)
    total = np.zeros(4, dtype=np.int64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        x, y = a[start:stop], b[start:stop]
        if cast_to_bf16:
            x, y = round_to_bf16(x), round_to_bf16(y)  # no copy when already bf16
        out = bits[start // 8 : (stop + 7) // 8]
        if bitwise_ok and on_cpu and x.dtype == y.dtype == torch.bfloat16:
            counts = bf16_probe(x.contiguous(), y.contiguous(), out, atol=atol)
        else:  # GPU tensors, other dtypes, or an eta at which bitwise equality is not the rule
            counts = _torch_probe(x, y, out, eta=eta, atol=atol)
        total += counts
    return bits, ProbeCounts(*(int(c) for c in total))


def _torch_probe(x: torch.Tensor, y: torch.Tensor, out: np.ndarray, *, eta: float, atol: float) -> ProbeCounts:
    """The probe of one block in torch ops, on any device: fills ``out`` with the packed η mask."""
    if x.dtype == y.dtype == torch.bfloat16 and 0 <= eta < BF16_MIN_RELATIVE_GAP:
        mask = bitwise_mask(x, y)  # the η rule on every bf16 code (module docstring)
    else:
        mask = eta_mask(x, y, eta)
    out[:] = np.packbits(mask.cpu().numpy(), bitorder="little")
    return ProbeCounts(
        int(torch.count_nonzero(mask)),
        int(torch.count_nonzero(abs_mask(x, y, atol))),
        int(torch.count_nonzero(~torch.isfinite(x))),
        int(torch.count_nonzero(~torch.isfinite(y))),
    )
