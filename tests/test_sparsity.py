"""Update-mask rules against independent computations on bf16 bit patterns."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bitwise_reference import abs_reference, bf16_codes, eta_reference
from offprincipal.metrics.sparsity import abs_mask, bitwise_mask, eta_mask, sparsity, update_mask


def all_finite_bf16() -> torch.Tensor:
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = bits.view(torch.bfloat16)
    return values[torch.isfinite(values)]


def next_up(x: torch.Tensor) -> torch.Tensor:
    """Adjacent bf16 value away from zero, computed on the bit pattern."""
    return (x.view(torch.int16) + 1).view(torch.bfloat16)


def test_eta_rule_equals_bitwise_equality_over_all_finite_bf16():
    x = all_finite_bf16()
    assert x.numel() == 65536 - 256  # exponent 0xFF (±inf, NaNs) removed
    # Distinct neighbours are the closest distinct pairs (same sign); pairs of opposite
    # sign differ by |a|+|b| >= max(|a|,|b|). So checking every value against its
    # neighbour covers the minimum relative gap over all distinct pairs.
    y = next_up(x)
    keep = torch.isfinite(y)  # the largest finite values step into ±inf
    x, y = x[keep], y[keep]
    assert bool(eta_mask(x, y).all()), "a pair of adjacent bf16 values escaped the eta rule"
    assert not bool(eta_mask(x, x).any())
    assert torch.equal(eta_mask(x, y), bitwise_mask(x, y))
    # The relative gap reaches its minimum 2^-8 exactly at binade boundaries.
    a, b = x.float(), y.float()
    rel = ((b - a).abs() / torch.maximum(a.abs(), b.abs()))[a != 0]
    assert float(rel.min()) == pytest.approx(2.0**-8)


def test_eta_rule_equals_bitwise_on_random_pairs_and_signed_zero():
    g = torch.Generator().manual_seed(0)
    w0 = (torch.randn(200_000, generator=g) * 0.02).bfloat16()
    step = torch.randn(200_000, generator=g) * 1e-4 * (torch.rand(200_000, generator=g) < 0.5)
    w1 = (w0.float() + step).bfloat16()
    assert torch.equal(eta_mask(w0, w1), bitwise_mask(w0, w1))
    assert torch.equal(update_mask(w0, w1), eta_mask(w0, w1))
    zeros = torch.tensor([0.0, -0.0]).bfloat16()
    assert not bool(bitwise_mask(zeros, zeros.flip(0)).any())
    assert not bool(eta_mask(zeros, zeros.flip(0)).any())


def test_eta_rule_is_not_bitwise_for_fp32():
    w0 = torch.tensor([1.0, 1.0], dtype=torch.float32)
    w1 = torch.tensor([1.0 + 1e-6, 1.0 + 1e-2], dtype=torch.float32)
    assert eta_mask(w0, w1).tolist() == [False, True]
    assert update_mask(w0, w1).tolist() == [False, True]


def test_absolute_tolerance_misses_small_weights_that_changed_in_bf16():
    w0 = torch.tensor([1e-3, 1.0]).bfloat16()
    w1 = next_up(w0)
    # numpy reference for the absolute rule on the exact bf16 values
    delta = np.abs(w1.float().numpy() - w0.float().numpy())
    assert abs_mask(w0, w1).tolist() == (delta > 1e-5).tolist() == [False, True]
    assert eta_mask(w0, w1).tolist() == [True, True]


def test_sparsity_definition():
    assert sparsity(25, 100) == 0.75
    with pytest.raises(ValueError):
        sparsity(0, 0)


@pytest.mark.parametrize("cast, dtype", [(True, torch.bfloat16), (True, torch.float32), (False, torch.float32)])
def test_block_pass_equals_the_reference_rules_across_block_edges(cast, dtype):
    from offprincipal.metrics.masks import unpack
    from offprincipal.metrics.sparsity import compare_blocks

    g = torch.Generator().manual_seed(5)
    w0 = (torch.randn(3, 1001, generator=g) * 0.02).to(dtype)
    w1 = (w0.float() + torch.randn(3, 1001, generator=g) * 1e-4 * (torch.rand(3, 1001, generator=g) < 0.4)).to(dtype)
    w0[0, :3] = torch.tensor([0.0, float("inf"), 1.0])
    w1[0, :3] = torch.tensor([-0.0, float("inf"), float("nan")])
    w1[2, 500] = 1e-6  # a sub-tolerance change of a zero weight
    bits, counts = compare_blocks(w0, w1, eta=1e-3, atol=1e-5, cast_to_bf16=cast, block=64)
    if cast:  # the independent reference on bf16 codes
        c0, c1 = bf16_codes(w0), bf16_codes(w1)
        expected = eta_reference(c0, c1).reshape(w0.shape)
        expected_abs = int(abs_reference(c0, c1, 1e-5).sum())
    else:  # fp32 compared unrounded: the η rule in fp32 (inf/NaN entries tested in test_nonfinite)
        expected = eta_mask(w0, w1).numpy()
        expected_abs = int(abs_mask(w0, w1).sum())
    np.testing.assert_array_equal(unpack(bits, tuple(w0.shape)), expected)
    assert counts.changed_eta == int(expected.sum())
    assert counts.changed_abs == expected_abs
    assert (counts.nonfinite_base, counts.nonfinite_ft) == (1, 2)


@pytest.mark.parametrize("partner", ["next_up", "negated", "shuffled", "same"])
def test_compiled_bf16_probe_equals_the_fp32_rules_on_every_bf16_pattern(partner):
    """All 65536 bf16 patterns (NaNs, infs, ±0 and subnormals included) against a partner,
    over several parallel tasks and a partial last byte, vs eta_mask in torch for finite pairs and the
    bitwise reference (tests/bitwise_reference.py) where inf/NaN is involved."""
    from offprincipal.metrics.bf16_kernel import bf16_probe
    from offprincipal.metrics.masks import unpack

    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    x = torch.cat([every, every.flip(0), every[:7]])  # 131079 entries: > one task, tail of 7
    y = {
        "next_up": x + 1,  # int16 wrap-around included: 0x7FFF + 1 = 0x8000
        "negated": x ^ -0x8000,
        "shuffled": x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(1))],
        "same": x.clone(),
    }[partner]
    w0, w1 = x.view(torch.bfloat16), y.view(torch.bfloat16)
    bits = np.empty((x.numel() + 7) // 8, dtype=np.uint8)
    changed, changed_abs, _, _ = bf16_probe(w0, w1, bits, atol=1e-5)
    # finite pairs: the η rule in fp32 (torch); inf/NaN pairs: the codes (test_nonfinite)
    finite = torch.isfinite(w0) & torch.isfinite(w1)
    expected = torch.where(finite, eta_mask(w0, w1), torch.from_numpy(eta_reference(bf16_codes(w0), bf16_codes(w1))))
    np.testing.assert_array_equal(unpack(bits, (x.numel(),)), expected.numpy())
    assert changed == int(expected.sum())
    assert changed_abs == int(abs_reference(bf16_codes(w0), bf16_codes(w1), 1e-5).sum())


def test_compiled_bf16_probe_rejects_mismatched_inputs():
    from offprincipal.metrics.bf16_kernel import bf16_probe

    w = torch.zeros(16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bf16 or fp32"):
        bf16_probe(w, w.half(), np.empty(2, np.uint8), atol=1e-5)
    with pytest.raises(ValueError, match="sizes"):
        bf16_probe(w, w, np.empty(3, np.uint8), atol=1e-5)


@pytest.mark.parametrize("sides", [("fp32", "bf16"), ("bf16", "fp32"), ("fp32", "fp32")])
def test_compiled_probe_rounds_fp32_to_bf16_exactly_as_torch(sides):
    """fp32 patterns at every exponent with the low 16 bits at and around the rounding tie
    (plus NaN payloads, ±inf, ±0, subnormals, overflow to inf) against Tensor.to(bfloat16),
    every NaN then given the canonical code 0x7FC0."""
    from offprincipal.metrics.bf16_kernel import bf16_probe
    from offprincipal.metrics.masks import unpack

    high = torch.arange(0, 1 << 16, dtype=torch.int64) << 16  # every bf16 pattern as the high half
    lows = torch.tensor([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF], dtype=torch.int64)
    bits32 = (high[:, None] | lows[None, :]).reshape(-1)
    as_fp32 = bits32.to(torch.int32).view(torch.float32)  # int64 → int32 wraps to the same 32 bits
    g = torch.Generator().manual_seed(2)
    partner_bf16 = as_fp32[torch.randperm(as_fp32.numel(), generator=g)].to(torch.bfloat16)
    nudged = as_fp32.to(torch.bfloat16)  # identical after rounding: only the 1e-5 rule may differ
    for other in (partner_bf16, nudged):
        w0 = as_fp32 if sides[0] == "fp32" else as_fp32.to(torch.bfloat16)
        w1 = other.float() if sides[1] == "fp32" else other
        bits = np.empty((w0.numel() + 7) // 8, dtype=np.uint8)
        changed, changed_abs, _, _ = bf16_probe(w0, w1, bits, atol=1e-5)
        c0, c1 = bf16_codes(w0), bf16_codes(w1)  # torch's rounding (NaN canonical), the reference
        expected = eta_reference(c0, c1)
        np.testing.assert_array_equal(unpack(bits, (w0.numel(),)), expected)
        assert changed == int(expected.sum())
        assert changed_abs == int(abs_reference(c0, c1, 1e-5).sum())


def test_precompile_caches_the_kernel_for_every_pair_of_stored_dtypes(tmp_path):
    """The install's precompile leaves numba's cache holding a compiled kernel for each of
    the four (bf16 | fp32) × (bf16 | fp32) argument types, so no pipeline run compiles it."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    code = "from offprincipal.metrics.bf16_kernel import precompile; precompile()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert len(list(tmp_path.rglob("bf16_kernel._probe-*.nbc"))) == 4
