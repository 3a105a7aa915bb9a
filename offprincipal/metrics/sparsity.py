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

import torch

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
