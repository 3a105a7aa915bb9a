"""Independent reference for the render tests: changed bf16 entries counted from the bits."""

import torch


def changed_bitwise(a: torch.Tensor, b: torch.Tensor) -> int:
    """Entries whose stored bf16 bit patterns differ, +0 and -0 counting as equal."""
    ia, ib = a.view(torch.int16), b.view(torch.int16)
    both_zero = ((ia & 0x7FFF) == 0) & ((ib & 0x7FFF) == 0)
    return int(((ia != ib) & ~both_zero).sum())
