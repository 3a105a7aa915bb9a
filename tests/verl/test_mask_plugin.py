"""The verl mask plugin (offprincipal.training.verl_mask_plugin) under FSDP2 over gloo, 2 ranks.

What runs here is verl's own code wherever a CPU allows it: the model is wrapped by verl's
``apply_fsdp2``, the optimizer built by verl's ``build_optimizer``, and each step is
``MaskedFSDPEngine.optimizer_step`` -- which calls verl's ``FSDPEngine.optimizer_step``
(``fsdp2_clip_grad_norm_``, the non-finite check, AdamW); the one device lookup that clip
uses (``get_device_id``, "cuda" on a CPU-only machine) is pointed at the CPU in the workers.
What needs a GPU and is not run:
``FSDPEngine.__init__``/``initialize`` (a device mesh on cuda, loading the model onto the GPU),
verl's forward/backward with remove-padding kernels, and the import through
``external_lib`` in Ray workers (see the GPU smoke script).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from offprincipal.training.masks import load_masks, masks_from_checkpoint, save_masks

from conftest import free_port
from fsdp_workers import train_masked

WORLD, STEPS = 2, 3


@pytest.fixture(scope="module")
def masks_path(tiny_base, tmp_path_factory):
    path = tmp_path_factory.mktemp("masks") / "masks.npz"
    save_masks(path, masks_from_checkpoint(tiny_base, "safe", alpha=0.5, rank_k=4))
    return path


def _train(tiny_base, masks_path, tmp_path, *, restore: bool, ckpt_dir=None):
    out = tmp_path / ("restored.pt" if restore else "control.pt")
    reports = tmp_path / ("reports" if restore else "reports_control")
    mp.spawn(train_masked, args=(WORLD, free_port(), str(tiny_base), str(masks_path), str(out), restore, str(reports),
                                 STEPS, str(ckpt_dir) if ckpt_dir else None), nprocs=WORLD, join=True)
    return torch.load(out), reports


def test_frozen_entries_stay_bitwise_under_adamw_weight_decay(tiny_base, masks_path, tmp_path):
    result, reports = _train(tiny_base, masks_path, tmp_path, restore=True)
    w0 = {n: t.float() for n, t in load_file(str(tiny_base / "model.safetensors")).items()}
    masks = load_masks(masks_path)
    final = result["state"]
    frozen_changed = trainable_changed = trainable = 0
    for name, w in final.items():
        keep = masks.get(name, torch.zeros_like(w, dtype=torch.bool))
        assert torch.equal(w[~keep], w0[name][~keep]), name  # bitwise, embeddings and norms included
        trainable_changed += int((w[keep] != w0[name][keep]).sum())
        trainable += int(keep.sum())
    assert frozen_changed == 0 and trainable > 0
    assert trainable_changed > 0.9 * trainable
    assert all(n > 0 for n in result["norms"])
    recs = [json.loads(p.read_text()) for p in sorted(reports.glob("rank_*.json"))]
    assert [r["rank"] for r in recs] == [0, 1]
    assert all(r["tensors"] == len(masks) and r["engine"] == "MaskedFSDPEngine" for r in recs)
    assert recs[0]["density"] == pytest.approx(sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()))


def test_without_the_restore_weight_decay_moves_frozen_entries(tiny_base, masks_path, tmp_path):
    """The control: masked gradients alone, verl's AdamW with weight decay 0.1 -- frozen entries move."""
    result, _ = _train(tiny_base, masks_path, tmp_path, restore=False)
    w0 = {n: t.float() for n, t in load_file(str(tiny_base / "model.safetensors")).items()}
    masks = load_masks(masks_path)
    moved = sum(int((w[~masks[n]] != w0[n][~masks[n]]).sum()) for n, w in result["state"].items() if n in masks)
    frozen = sum(int((~m).sum()) for m in masks.values())
    assert moved > 0.9 * frozen


def test_registry_serves_the_masked_engine_and_refuses_a_dense_one(monkeypatch):
    from verl.workers.engine.base import BaseEngine, EngineRegistry

    from offprincipal.training.verl_mask_plugin import MASK_ENV, MaskedFSDPEngine

    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is MaskedFSDPEngine

    class DenseEngine(BaseEngine):  # an engine that would train every weight
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    key = "offprincipal_test_dense"
    if key not in EngineRegistry._engines["language_model"]:
        EngineRegistry.register("language_model", key, device=["cuda", "npu", "cpu"])(DenseEngine)
    train_cfg, ref_cfg = SimpleNamespace(forward_only=False), SimpleNamespace(forward_only=True)
    monkeypatch.delenv(MASK_ENV, raising=False)
    assert isinstance(EngineRegistry.new("language_model", key, engine_config=train_cfg), DenseEngine)
    monkeypatch.setenv(MASK_ENV, "/masks.npz")
    assert isinstance(EngineRegistry.new("language_model", key, engine_config=ref_cfg), DenseEngine)  # reference: fine
    with pytest.raises(RuntimeError, match="masked run.*DenseEngine.*would train every weight"):
        EngineRegistry.new("language_model", key, engine_config=train_cfg)


def test_masks_that_do_not_fit_the_model_are_refused(tiny_base):
    from transformers import AutoModelForCausalLM
    from verl.workers.config import FSDPEngineConfig

    from offprincipal.training.verl_mask_plugin import MaskedFSDPEngine

    model = AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32)
    engine = MaskedFSDPEngine.__new__(MaskedFSDPEngine)
    engine.module, engine.model_config = model, SimpleNamespace(lora_rank=0)
    engine.engine_config = FSDPEngineConfig(strategy="fsdp2")
    name = "model.layers.0.self_attn.q_proj.weight"
    shape = tuple(model.get_parameter(name).shape)
    with pytest.raises(KeyError, match="does not have"):
        engine.install_masks({"model.layers.9.mlp.up_proj.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="mask shape"):
        engine.install_masks({name: torch.ones(shape[0], shape[1] + 1, dtype=torch.bool)})
    engine.engine_config = FSDPEngineConfig(strategy="fsdp")
    with pytest.raises(RuntimeError, match="fsdp2"):
        engine.install_masks({name: torch.ones(shape, dtype=torch.bool)})
    engine.engine_config = FSDPEngineConfig(strategy="fsdp2")
    with pytest.raises(RuntimeError, match="before the masks were installed"):
        engine.optimizer_step()
