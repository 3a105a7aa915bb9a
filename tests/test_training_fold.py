"""Adapter folding (offprincipal.training.fold) and the offline PiSSA init (.pissa) against
peft's own merge on the ORIGINAL model and against the LoRA formula computed by hand."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from offprincipal.training.fold import AdapterError, check_adapter, fold_adapter, read_peft_adapter
from offprincipal.training.masks import is_mask_target
from offprincipal.training.pissa import ADAPTER_DIR, RECORD, init_pissa
from offprincipal.training.run_directory import CKPT_INFO
from offprincipal.training.tiny import build_tiny_base

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("fold") / "base"
    build_tiny_base(path, words=[f"w{i}" for i in range(20)], hidden_size=32, num_layers=2, seed=3)
    return path


def _fp32(path):
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def _trained_adapter(peft_model, seed: int) -> dict[str, torch.Tensor]:
    """Move every adapter tensor as training would (seeded), and return them in peft's saved naming."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
                out[name.replace(".default.weight", ".weight")] = p.detach().clone()
    return out


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_lora_fold_equals_peft_merge_and_the_formula(base, tmp_path):
    ref = get_peft_model(_fp32(base), LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False))
    adapter = _trained_adapter(ref, seed=1)
    expected = {k: v.to(torch.bfloat16) for k, v in ref.merge_and_unload().state_dict().items()}

    meta = {"r": RANK, "lora_alpha": ALPHA}
    out = tmp_path / "folded"
    checked = fold_adapter(base, adapter, out, rank=RANK, alpha=ALPHA, target_modules=TARGETS, meta=meta,
                           info={"step": 5, "adapter": "test"})
    assert checked == {"modules": 14, "zero_modules": 0}
    got = _weights(out)
    w0 = _weights(base)
    assert sorted(got) == sorted(w0)
    for name, t in got.items():
        assert t.dtype == torch.bfloat16
        assert torch.equal(t, expected[name]), name
        if not is_mask_target(name):
            assert torch.equal(t, w0[name]), name  # only adapted projections move
    # the LoRA formula by hand, fp32, one rounding: W0 + (alpha / r) B @ A
    name = "model.layers.1.mlp.down_proj.weight"
    stem = "base_model.model." + name.removesuffix(".weight")
    A, B = adapter[stem + ".lora_A.weight"], adapter[stem + ".lora_B.weight"]
    by_hand = (w0[name].float() + (ALPHA / RANK) * (B @ A)).to(torch.bfloat16)
    assert (by_hand != got[name]).float().mean() < 1e-3  # fp32 summation order may differ in the last bit
    assert not torch.equal(got[name], w0[name])
    assert json.loads((out / CKPT_INFO).read_text())["step"] == 5


def test_pissa_init_and_fold_equal_peft_on_the_original_base(base, tmp_path):
    pissa_dir = tmp_path / "pissa"
    record = init_pissa(base, pissa_dir, rank=RANK, alpha=ALPHA, target_modules=TARGETS)
    assert json.loads((pissa_dir / RECORD).read_text()) == record
    residual = _weights(pissa_dir)
    assert all(t.dtype == torch.float32 for t in residual.values())
    w0 = _weights(base)
    moved = [n for n in w0 if not torch.equal(residual[n], w0[n].float())]
    assert moved and all(is_mask_target(n) for n in moved)  # the residual differs exactly on the projections

    # independently: peft's PiSSA on the ORIGINAL base in memory, then the same "training"
    ref = get_peft_model(_fp32(base), LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights="pissa"))
    init_adapter, cfg = read_peft_adapter(pissa_dir / ADAPTER_DIR)
    assert cfg["r"] == RANK and cfg["lora_alpha"] == ALPHA
    for name, p in ref.named_parameters():  # same principal init as the one on disk
        if "lora_" in name:
            assert torch.equal(p.detach(), init_adapter[name.replace(".default.weight", ".weight")]), name
    trained = _trained_adapter(ref, seed=2)
    expected = {k: v.to(torch.bfloat16) for k, v in ref.merge_and_unload().state_dict().items()}

    out = tmp_path / "folded"
    fold_adapter(pissa_dir, trained, out, rank=RANK, alpha=ALPHA, target_modules=TARGETS, meta=cfg)
    got = _weights(out)
    for name in w0:
        assert torch.equal(got[name], expected[name]), name

    # folding the untrained init gives back the original base (to bf16 rounding of W_res + principal part)
    fold_adapter(pissa_dir, init_adapter, tmp_path / "init", rank=RANK, alpha=ALPHA, target_modules=TARGETS, meta=cfg)
    back = _weights(tmp_path / "init")
    same = sum(int((back[n] == w0[n]).sum()) for n in w0) / sum(t.numel() for t in w0.values())
    assert same > 0.999


@pytest.mark.parametrize(
    "meta, edit, match",
    [
        ({"r": RANK, "lora_alpha": 0}, None, "lora_alpha is 0"),
        ({"r": RANK}, None, "lora_alpha is None"),
        ({"r": RANK, "lora_alpha": 16}, None, "differs from the configured 8.0"),
        ({"r": 8, "lora_alpha": ALPHA}, None, "rank 8 differs"),
        ({"r": RANK, "lora_alpha": ALPHA}, "zero_b", "B·A is zero for all"),
    ],
)
def test_bad_adapters_are_refused(base, meta, edit, match):
    ref = get_peft_model(_fp32(base), LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False))
    adapter = _trained_adapter(ref, seed=3)
    if edit == "zero_b":
        adapter = {k: (torch.zeros_like(v) if ".lora_B." in k else v) for k, v in adapter.items()}
    with pytest.raises(AdapterError, match=match):
        check_adapter(adapter, rank=RANK, alpha=ALPHA, meta=meta, where="test")
