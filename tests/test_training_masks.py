"""Training masks vs direct numpy computations; densities; save/load; the mask enforcer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offprincipal.training.callbacks import MaskEnforcer
from offprincipal.training.masks import (
    build_masks,
    is_mask_target,
    layer_densities,
    load_masks,
    mask_densities,
    matrix_mask,
    save_masks,
)

ALPHA, K = 0.5, 3


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = {}
    for layer in range(2):
        for proj, shape in [("self_attn.q_proj", (16, 16)), ("self_attn.k_proj", (8, 16)), ("mlp.down_proj", (16, 24))]:
            w[f"model.layers.{layer}.{proj}.weight"] = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
        w[f"model.layers.{layer}.input_layernorm.weight"] = torch.ones(16)
    w["model.embed_tokens.weight"] = torch.randn(10, 16, generator=g)
    return w


def _np_top(scores: np.ndarray, alpha: float, largest: bool) -> np.ndarray:
    flat = scores.reshape(-1)
    n = int(round(alpha * flat.size))
    order = np.argsort(-flat if largest else flat, kind="stable")
    m = np.zeros(flat.size, dtype=bool)
    m[order[:n]] = True
    return m.reshape(scores.shape)


def _np_principal(w: np.ndarray, k: int, alpha: float) -> np.ndarray:
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    recon = (u[:, :k] * s[:k]) @ vt[:k]
    return _np_top(np.abs(recon), alpha, largest=True)


def test_targets():
    assert is_mask_target("model.layers.3.self_attn.q_proj.weight")
    assert is_mask_target("model.layers.0.mlp.down_proj.weight", (4, 8))
    assert not is_mask_target("model.layers.0.mlp.down_proj.bias")
    assert not is_mask_target("model.layers.0.input_layernorm.weight")
    assert not is_mask_target("model.embed_tokens.weight")
    assert not is_mask_target("lm_head.weight")


def test_masks_match_numpy():
    w = _weights()
    targets = [n for n in w if is_mask_target(n)]
    masks = {
        kind: build_masks(kind, w, alpha=ALPHA, rank_k=K, seed=7)
        for kind in ("principal", "nonprincipal", "low", "safe", "random")
    }
    for kind in masks:
        assert sorted(masks[kind]) == sorted(targets)
    for name in targets:
        w0 = w[name].float().numpy()
        principal = _np_principal(w0, K, ALPHA)
        low = _np_top(np.abs(w0), ALPHA, largest=False)
        # principal: top-alpha of |rank-k reconstruction|; ties essentially impossible in fp64
        np.testing.assert_array_equal(masks["principal"][name].numpy(), principal)
        np.testing.assert_array_equal(masks["nonprincipal"][name].numpy(), ~principal)
        # low: bottom-alpha of |W0| -- bf16 values tie, the stable argsort breaks ties by position
        np.testing.assert_array_equal(masks["low"][name].numpy(), low)
        np.testing.assert_array_equal(masks["safe"][name].numpy(), low | ~principal)
        n = w0.size
        assert masks["principal"][name].sum() == round(ALPHA * n)
        assert masks["low"][name].sum() == round(ALPHA * n)
        rnd = masks["random"][name]
        assert rnd.sum() == masks["safe"][name].sum()  # same density as safe, per matrix
        assert not torch.equal(rnd, masks["safe"][name])
    # per-matrix density matching implies per-layer density matching
    assert layer_densities(masks["random"]) == pytest.approx(layer_densities(masks["safe"]))
    assert mask_densities(masks["random"]) == mask_densities(masks["safe"])


def test_random_mask_is_seeded_and_order_free():
    w = _weights()
    a = build_masks("random", w, alpha=ALPHA, rank_k=K, seed=1)
    b = build_masks("random", list(reversed(list(w.items()))), alpha=ALPHA, rank_k=K, seed=1)
    c = build_masks("random", w, alpha=ALPHA, rank_k=K, seed=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_errors():
    with pytest.raises(ValueError, match="mask kind"):
        matrix_mask("none", torch.zeros(2, 2), alpha=0.5, rank_k=1)
    with pytest.raises(ValueError, match="2-D"):
        matrix_mask("low", torch.zeros(4), alpha=0.5, rank_k=1)
    with pytest.raises(ValueError, match="no q/k/v/o"):
        build_masks("low", {"model.embed_tokens.weight": torch.zeros(3, 3)}, alpha=0.5, rank_k=1)


def test_save_load_round_trip(tmp_path):
    masks = build_masks("safe", _weights(), alpha=ALPHA, rank_k=K)
    save_masks(tmp_path / "m.npz", masks)
    back = load_masks(tmp_path / "m.npz")
    assert sorted(back) == sorted(masks)
    assert all(back[n].dtype == torch.bool and torch.equal(back[n], masks[n]) for n in masks)


def test_enforcer_keeps_frozen_entries_bitwise_under_weight_decay():
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 10, bias=False)
    with torch.no_grad():
        lin.weight.copy_(lin.weight.to(torch.bfloat16).float())
    w0 = lin.weight.detach().clone()
    mask = build_masks("safe", {"model.layers.0.mlp.up_proj.weight": w0}, alpha=0.5, rank_k=2)
    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.layers = torch.nn.ModuleList([torch.nn.Module()])
    model.model.layers[0].mlp = torch.nn.Module()
    model.model.layers[0].mlp.up_proj = lin
    keep = mask["model.layers.0.mlp.up_proj.weight"]
    enforcer = MaskEnforcer(mask)
    enforcer.attach(model)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        lin(torch.randn(5, 12)).pow(2).sum().backward()
        assert not lin.weight.grad[~keep].any()  # masked before any clipping could see them
        torch.nn.utils.clip_grad_norm_(lin.parameters(), 1.0)
        opt.step()
        enforcer.restore()
    assert torch.equal(lin.weight.detach()[~keep], w0[~keep])
    assert (lin.weight.detach()[keep] != w0[keep]).all()
    enforcer.detach()
