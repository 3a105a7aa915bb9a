"""Principal / low-magnitude masks, overlaps and bit-packed storage."""

import itertools

import numpy as np
import pytest
import torch

from offprincipal.metrics.masks import (
    MaskFile,
    low_magnitude_mask,
    mask_writer,
    overlap,
    principal_mask,
    top_fraction_mask,
)
from offprincipal.metrics.spectral import spectrum


def test_bitpacked_roundtrip_keeps_every_bit(tmp_path):
    rng = np.random.default_rng(0)
    masks = {f"t{i}": rng.random(shape) < p for i, (shape, p) in enumerate([((7, 13), 0.3), ((5,), 0.9), ((64, 3), 0.01)])}
    with mask_writer(tmp_path / "m.npz") as w:
        for name, m in masks.items():
            w.add(name, torch.from_numpy(m))
    with MaskFile(tmp_path / "m.npz") as mf:
        assert sorted(mf.names) == sorted(masks)
        for name, m in masks.items():
            np.testing.assert_array_equal(mf.mask(name), m)


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with mask_writer(tmp_path / "m.npz") as w:
            w.add("a", torch.ones(3, dtype=torch.bool))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_principal_mask_is_top_alpha_of_rank_k_reconstruction():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((20, 16))
    sp = spectrum(torch.from_numpy(w), top_k=16)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    recon = np.abs((u[:, :4] * s[:4]) @ vt[:4])
    n = round(0.25 * w.size)
    expected = np.zeros(w.size, bool)
    expected[np.argsort(-recon.reshape(-1), kind="stable")[:n]] = True
    got = principal_mask(sp.U, sp.S, sp.V, k=4, alpha=0.25).numpy().reshape(-1)
    assert got.sum() == n
    # the reconstruction agrees to rounding, so ties at the threshold are the only freedom
    assert (got != expected).sum() <= 2


def test_low_magnitude_mask_picks_smallest_entries():
    w = torch.tensor([[0.5, -0.01, 0.2], [-0.3, 0.02, 0.0]])
    assert low_magnitude_mask(w, alpha=0.5).tolist() == [[False, True, False], [False, True, True]]


def test_overlap_of_random_masks_matches_density_baseline():
    g = torch.Generator().manual_seed(2)
    for alpha, p in itertools.product([0.05, 0.5], [0.1, 0.6]):
        ref = top_fraction_mask(torch.rand(400, 500, generator=g), alpha, largest=True)
        upd = torch.rand(400, 500, generator=g) < p
        ov, density = overlap(ref, upd)
        assert density == pytest.approx(alpha)
        # binomial standard error of the overlap is sqrt(alpha(1-alpha)/|upd|) < 0.005 here
        assert ov == pytest.approx(alpha, abs=0.02)


def test_overlap_counts_against_direct_sets():
    ref = torch.tensor([True, True, False, False, True])
    upd = torch.tensor([True, False, False, True, True])
    assert overlap(ref, upd) == (2 / 3, 3 / 5)
    assert np.isnan(overlap(ref, torch.zeros(5, dtype=torch.bool))[0])


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("alpha", [0.0001, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("data", ["ties", "signed", "fp64_below_fp32", "fp32_wide", "bf16"])
def test_top_fraction_mask_equals_a_stable_sort(largest, alpha, data):
    """The selection-based mask against numpy's stable argsort: scores full of ties, of both
    signs with ±0 and ±inf, fp64 values closer than fp32 can tell apart (fp64 is ranked on
    fp32 first), spread over many binades, and bf16."""
    rng = np.random.default_rng(3)
    shape = (61, 53)
    if data == "ties":
        scores = torch.from_numpy(rng.integers(0, 7, size=shape).astype(np.float64))
    elif data == "fp64_below_fp32":  # 3 fp32 values, hundreds of distinct fp64 values within each
        x = rng.integers(1, 4, size=shape) + rng.integers(0, 300, size=shape) * 1e-12
        scores = torch.from_numpy(x * np.where(rng.random(shape) < 0.3, -1.0, 1.0))
    elif data == "signed":
        x = rng.standard_normal(shape)
        x.reshape(-1)[:40] = [0.0, -0.0, np.inf, -np.inf] * 10
        scores = torch.from_numpy(x)
    elif data == "fp32_wide":
        scores = torch.from_numpy((rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).astype(np.float32))
    else:
        scores = torch.from_numpy(rng.standard_normal(shape).astype(np.float32) * 0.02).bfloat16()
    ref = scores.double().numpy().reshape(-1)
    n = round(alpha * ref.size)
    order = np.argsort(-ref if largest else ref, kind="stable")
    expected = np.zeros(ref.size, bool)
    expected[order[:n]] = True
    got = top_fraction_mask(scores, alpha, largest=largest).numpy().reshape(-1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_magnitude_mask_of_half_precision_weights_equals_a_stable_sort_of_their_values(dtype):
    """16-bit weights are ranked on their own codes: many exact ties (few distinct values),
    -0.0 beside +0.0 and negatives, the same mask as a stable sort of the fp64 magnitudes."""
    g = torch.Generator().manual_seed(11)
    w = (torch.randn(64, 48, generator=g) * 0.02).to(dtype)
    w[0, :5] = -0.0
    w[1, :5] = 0.0
    for alpha in (0.1, 0.5, 0.77):
        n = int(round(alpha * w.numel()))
        order = np.argsort(np.abs(w.double().numpy()).reshape(-1), kind="stable")
        expected = np.zeros(w.numel(), dtype=bool)
        expected[order[:n]] = True
        np.testing.assert_array_equal(low_magnitude_mask(w, alpha=alpha).numpy().reshape(-1), expected)
