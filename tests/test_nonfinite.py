"""inf and NaN under the update rules: bitwise equality of the bf16 codes, in the compiled
kernel and the torch path alike, against an independent computation on the bit patterns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitwise_reference import abs_reference, bf16_codes, eta_reference, nonfinite_codes
from offprincipal.metrics.bf16_kernel import bf16_probe
from offprincipal.metrics.masks import unpack
from offprincipal.metrics.sparsity import _torch_probe, abs_mask, compare_blocks, eta_mask, round_to_bf16, update_mask

ATOL = 1e-5


def bf16(*codes: int) -> torch.Tensor:
    return torch.tensor(codes, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)


def fp32(*codes: int) -> torch.Tensor:
    return torch.tensor([c - (1 << 32) if c >= 1 << 31 else c for c in codes], dtype=torch.int32).view(torch.float32)


BF16_MAX, BF16_INF, BF16_NEG_INF = 0x7F7F, 0x7F80, 0xFF80
NAN, NAN_PAYLOAD, NEG_NAN = 0x7FC0, 0x7FC1, 0xFFC0
ONE, ZERO, NEG_ZERO = 0x3F80, 0x0000, 0x8000

# (base code, ft code, changed?) -- the expectation written by hand from the definition
BF16_CASES = [
    (ZERO, NEG_ZERO, False),  # ±0 are the same weight
    (BF16_INF, BF16_INF, False),  # identical inf: unchanged (the fp32 formula said changed)
    (BF16_NEG_INF, BF16_NEG_INF, False),
    (BF16_INF, BF16_NEG_INF, True),
    (BF16_MAX, BF16_INF, True),  # finite → inf: changed (the fp32 formula said unchanged)
    (ONE, BF16_INF, True),
    (BF16_INF, ONE, True),
    (NAN, NAN, False),  # identical NaN code: unchanged
    (NAN, NAN_PAYLOAD, True),  # another payload is another stored weight
    (NAN, NEG_NAN, True),
    (NAN, ONE, True),  # NaN → finite
    (ONE, NAN, True),
    (BF16_INF, NAN, True),
    (ONE, ONE, False),
    (ONE, ONE + 1, True),
]


def _run_all_paths(w0: torch.Tensor, w1: torch.Tensor):
    """(mask, changed_eta, changed_abs, nonfinite_base, nonfinite_ft) from every path that
    implements the probe: the compiled kernel, compare_blocks, and the torch block probe."""
    n = w0.numel()
    out = {}
    bits = np.empty((n + 7) // 8, np.uint8)
    c = bf16_probe(w0.contiguous(), w1.contiguous(), bits, atol=ATOL)
    out["kernel"] = (unpack(bits, (n,)), *c)
    bits, c = compare_blocks(w0, w1, eta=1e-3, atol=ATOL, cast_to_bf16=True, block=8)
    out["compare_blocks"] = (unpack(bits, (n,)), *c)
    x, y = round_to_bf16(w0), round_to_bf16(w1)
    bits = np.empty((n + 7) // 8, np.uint8)
    c = _torch_probe(x, y, bits, eta=1e-3, atol=ATOL)
    out["torch bf16 path"] = (unpack(bits, (n,)), *c)
    out["eta_mask/abs_mask"] = (eta_mask(x, y).numpy(), None, int(abs_mask(x, y, ATOL).sum()), None, None)
    out["update_mask"] = (update_mask(x, y).numpy(), None, None, None, None)
    return out


def _check_against_reference(w0, w1):
    c0, c1 = bf16_codes(w0), bf16_codes(w1)
    mask = eta_reference(c0, c1)
    expected = (mask, int(mask.sum()), int(abs_reference(c0, c1, ATOL).sum()),
                int(nonfinite_codes(c0).sum()), int(nonfinite_codes(c1).sum()))
    for path, got in _run_all_paths(w0, w1).items():
        np.testing.assert_array_equal(got[0], expected[0], err_msg=path)
        for i, (g, e) in enumerate(zip(got[1:], expected[1:]), 1):
            if g is not None:
                assert g == e, (path, ["changed_eta", "changed_abs", "nonfinite_base", "nonfinite_ft"][i - 1])
    return expected


@pytest.mark.parametrize("base, ft, changed", BF16_CASES)
def test_each_special_bf16_case_in_every_path(base, ft, changed):
    # padded to 9 entries so the kernel sees a full byte and a partial one
    w0, w1 = bf16(base, *[ONE] * 8), bf16(ft, *[ONE] * 8)
    mask, ce, ca, nb, nf = _check_against_reference(w0, w1)
    assert bool(mask[0]) is changed
    assert ce == int(changed)
    assert ca == int(changed)  # for these cases the absolute rule agrees (all Δ are 0, huge or non-finite)
    assert nb == int(nonfinite_codes(np.array([base], np.uint16))[0])
    assert nf == int(nonfinite_codes(np.array([ft], np.uint16))[0])


def test_fp32_sides_are_rounded_to_bf16_before_the_rule():
    # fp32 3.4e38 rounds to bf16 +inf (bf16's largest finite value is 3.3895e38)
    big = int(np.array([3.4e38], np.float32).view(np.uint32)[0])
    assert torch.isinf(fp32(big).to(torch.bfloat16)).all()
    cases = [
        (bf16(BF16_MAX), fp32(big), True),  # finite → rounds to inf: changed
        (bf16(BF16_INF), fp32(big), False),  # inf vs a value that rounds to the same inf
        (fp32(big), fp32(0x7F800000), False),  # both round to +inf
        (bf16(NAN), fp32(0x7FC00001), False),  # every fp32 NaN rounds to the canonical 0x7FC0
        (bf16(NAN), fp32(0xFFC00000), False),
        (bf16(NAN_PAYLOAD), fp32(0x7FC00000), True),  # a bf16 NaN with another payload
        (bf16(ONE), fp32(0x7FC00000), True),  # finite → NaN
    ]
    for w0, w1, changed in cases:
        w0 = torch.cat([w0, w0.new_ones(8)])
        w1 = torch.cat([w1, w1.new_ones(8)])
        mask, *_ = _check_against_reference(w0, w1)
        assert bool(mask[0]) is changed, (w0[0], w1[0])


@pytest.mark.parametrize("partner", ["next_up", "negated", "shuffled", "same", "nan_payloads"])
def test_every_bf16_pattern_in_the_kernel_and_the_torch_path(partner):
    """All 65536 codes against a partner (over several parallel tasks and a partial byte)."""
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    x = torch.cat([every, every.flip(0), every[:7]])
    g = torch.Generator().manual_seed(1)
    y = {
        "next_up": x + 1,
        "negated": x ^ -0x8000,
        "shuffled": x[torch.randperm(x.numel(), generator=g)],
        "same": x.clone(),
        # every NaN and inf against a random special code: many equal, many not
        "nan_payloads": torch.where(
            (x & 0x7F80) == 0x7F80, torch.tensor([0x7F80, 0x7FC0, 0x7FC1, -0x0040], dtype=torch.int16)[
                torch.randint(0, 4, x.shape, generator=g)], x),
    }[partner]
    w0, w1 = x.view(torch.bfloat16), y.view(torch.bfloat16)
    mask, ce, ca, nb, nf = _check_against_reference(w0, w1)
    # 256 non-finite codes (±inf and 254 NaNs: exponent all ones, 7 mantissa bits) per copy;
    # the 7-entry tail holds only -0 and subnormals
    assert nb == 2 * 256


def test_unrounded_fp32_rule_decides_non_finite_entries_by_fp32_codes():
    """cast_to_bf16=False: the η rule in fp32, inf/NaN by the fp32 codes."""
    w0 = fp32(0x7F800000, 0x7F800000, 0x7FC00000, 0x7FC00000, 0x3F800000, 0x00000000, 0x7F7FFFFF, 0x3F800000, 0x3F800000)
    w1 = fp32(0x7F800000, 0xFF800000, 0x7FC00000, 0x7FC00001, 0x7F800000, 0x80000000, 0x7F800000, 0x3F800001, 0x3F810000)
    expected = [False, True, False, True, True, False, True, False, True]  # by hand; 1+2^-23 is within η
    bits, counts = compare_blocks(w0, w1, eta=1e-3, atol=ATOL, cast_to_bf16=False, block=8)
    assert unpack(bits, (9,)).tolist() == expected
    assert eta_mask(w0, w1).tolist() == expected
    assert counts.changed_eta == sum(expected)
    # absolute rule: codes for the non-finite entries, |Δ| > 1e-5 for the finite ones
    assert abs_mask(w0, w1, ATOL).tolist() == [False, True, False, True, True, False, True, False, True]
    assert (counts.nonfinite_base, counts.nonfinite_ft) == (4, 6)


def test_round_to_bf16_gives_every_nan_the_canonical_code_and_keeps_the_rest_as_torch():
    codes = torch.tensor([0x7FC00001, -0x00400000, 0x7F800001, -1, 0x3F800000, 0x7F800000], dtype=torch.int32)
    w = codes.view(torch.float32)
    got = round_to_bf16(w).view(torch.int16).numpy().view(np.uint16).tolist()
    assert got[:4] == [0x7FC0] * 4
    assert got[4:] == [0x3F80, 0x7F80]
    b = bf16(NAN_PAYLOAD, NEG_NAN)
    assert round_to_bf16(b) is b  # stored bf16 NaN codes are data, left alone
