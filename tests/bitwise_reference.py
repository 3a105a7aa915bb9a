"""Independent reference for the render tests: changed bf16 entries counted from the bits."""

import torch


def changed_bitwise(a: torch.Tensor, b: torch.Tensor) -> int:
    """Entries whose stored bf16 bit patterns differ, +0 and -0 counting as equal."""
    ia, ib = a.view(torch.int16), b.view(torch.int16)
    both_zero = ((ia & 0x7FFF) == 0) & ((ib & 0x7FFF) == 0)
    return int(((ia != ib) & ~both_zero).sum())


# The probe's rules on bf16 codes, written with numpy on the raw bit patterns, independent of
# offprincipal.metrics (torch is used only to round fp32 to bf16, as the probe specifies).


def bf16_codes(w: torch.Tensor) -> "np.ndarray":
    """uint16 bf16 codes of ``w``: a bf16 tensor as stored; anything else rounded by torch,
    every NaN then given the canonical code 0x7FC0 (torch's own NaN code differs between its
    scalar, vectorised and CUDA casts, so the probe defines one)."""
    import numpy as np

    if w.dtype == torch.bfloat16:
        return w.reshape(-1).view(torch.int16).numpy().view(np.uint16)
    codes = w.to(torch.bfloat16).reshape(-1).view(torch.int16).numpy().view(np.uint16).copy()
    codes[np.isnan(w.reshape(-1).float().numpy())] = 0x7FC0
    return codes


def nonfinite_codes(c: "np.ndarray") -> "np.ndarray":
    return (c & 0x7F80) == 0x7F80  # exponent all ones: ±inf or NaN


def eta_reference(c0: "np.ndarray", c1: "np.ndarray") -> "np.ndarray":
    """Changed under the η rule on bf16 codes: the codes differ and are not +0 / -0."""
    both_zero = ((c0 & 0x7FFF) == 0) & ((c1 & 0x7FFF) == 0)
    return (c0 != c1) & ~both_zero


def abs_reference(c0: "np.ndarray", c1: "np.ndarray", atol: float) -> "np.ndarray":
    """Changed under |Δ| > atol (fp32 arithmetic) where both are finite, else codes differ."""
    import numpy as np

    f0 = (c0.astype(np.uint32) << 16).view(np.float32)
    f1 = (c1.astype(np.uint32) << 16).view(np.float32)
    bad = nonfinite_codes(c0) | nonfinite_codes(c1)
    with np.errstate(invalid="ignore", over="ignore"):
        finite_rule = np.abs(f1 - f0) > np.float32(atol)
    return np.where(bad, c0 != c1, finite_rule)
