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
"""

from __future__ import annotations

import numpy as np
import torch

from offprincipal.metrics.bf16_kernel import bf16_probe

BF16_MIN_RELATIVE_GAP = 2.0**-8  # smallest |a-b|/max(|a|,|b|) between distinct bf16 values


def eta_mask(w0: torch.Tensor, w1: torch.Tensor, eta: float = 1e-3) -> torch.Tensor:
    """The η rule in fp32 (bf16 → fp32 is exact). NaN differences count as changed."""
    a = w0.float()
    b = w1.float()
    unchanged = (b - a).abs() <= eta * torch.maximum(a.abs(), b.abs())
    return ~unchanged


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
    ``eta`` lies below bf16's smallest relative gap (where the two rules coincide)."""
    if w0.dtype == w1.dtype == torch.bfloat16 and 0 <= eta < BF16_MIN_RELATIVE_GAP:
        finite = torch.isfinite(w0) & torch.isfinite(w1)
        mask = bitwise_mask(w0, w1)
        if not bool(finite.all()):
            mask = torch.where(finite, mask, eta_mask(w0, w1, eta))
        return mask
    return eta_mask(w0, w1, eta)


def abs_mask(w0: torch.Tensor, w1: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
    """Mukherjee et al.'s rule: ``not isclose(w1 - w0, 0, atol)``, i.e. ``|Δ| > atol``."""
    return ~((w1.float() - w0.float()).abs() <= atol)


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
) -> tuple[np.ndarray, int, int]:
    """The sparsity pass for one tensor pair: the η-rule update mask (bit-packed, little bit
    order), its number of changed entries, and the number changed under ``|Δ| > atol``.

    bf16 tensors (and, with ``cast_to_bf16``, fp32 ones) on the CPU go through
    :func:`~offprincipal.metrics.bf16_kernel.bf16_probe` in one pass. Anything else (GPU
    tensors, other dtypes, fp32 compared unrounded) works in fixed-size blocks so memory
    stays O(block): a 233M-entry embedding would otherwise need several GB of fp32
    temporaries. For finite bf16 values the mask is the bitwise rule, which equals the η
    rule there; entries with inf/NaN take the η rule itself.
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
        return bits, *bf16_probe(a.contiguous(), b.contiguous(), bits, eta=eta, atol=atol)
    changed_eta = changed_abs = 0
    for start in range(0, n, block):
        stop = min(n, start + block)
        x, y = a[start:stop], b[start:stop]
        if cast_to_bf16:
            x, y = x.to(torch.bfloat16), y.to(torch.bfloat16)  # no copy when already bf16
        out = bits[start // 8 : (stop + 7) // 8]
        if bitwise_ok and on_cpu and x.dtype == y.dtype == torch.bfloat16:
            ce, ca = bf16_probe(x.contiguous(), y.contiguous(), out, eta=eta, atol=atol)
        else:  # GPU tensors, other dtypes, or an eta at which bitwise equality is not the rule
            ce, ca = _torch_probe(x, y, out, eta=eta, atol=atol)
        changed_eta += ce
        changed_abs += ca
    return bits, changed_eta, changed_abs


def _torch_probe(x: torch.Tensor, y: torch.Tensor, out: np.ndarray, *, eta: float, atol: float) -> tuple[int, int]:
    """The probe of one block in torch ops, on any device: fills ``out`` with the packed η mask."""
    if x.dtype == y.dtype == torch.bfloat16 and 0 <= eta < BF16_MIN_RELATIVE_GAP:
        xi, yi = x.view(torch.int16), y.view(torch.int16)
        either = xi | yi
        if bool(((either & 0x7F80) == 0x7F80).any()):  # an inf/NaN somewhere: exact rule
            mask = eta_mask(x, y, eta)
        else:
            mask = (xi != yi) & ((either & 0x7FFF) != 0)  # +0 vs -0 is no change
    else:
        mask = eta_mask(x, y, eta)
    out[:] = np.packbits(mask.cpu().numpy(), bitorder="little")
    return int(torch.count_nonzero(mask)), int(torch.count_nonzero(abs_mask(x, y, atol)))
