"""verl FSDP checkpoints (saved by verl's FSDPCheckpointManager on 2 gloo ranks) to HF:
``python -m verl.model_merger`` for full weights, read back through offprincipal's reader;
our fold for LoRA (which the merger leaves unfolded, verl #7285); the frozen-entry check."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from offprincipal.checkpoints.reader import Checkpoint
from offprincipal.training.fold import fold_adapter, read_fsdp_adapter
from offprincipal.training.masks import masks_from_checkpoint, save_masks
from offprincipal.training.merge import FrozenEntriesChanged, check_frozen, merge_full
from offprincipal.training.run_directory import CKPT_INFO

from conftest import free_port
from fsdp_workers import train_lora, train_masked

WORLD = 2
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}


@pytest.fixture(scope="module")
def masked_runs(tiny_base, tmp_path_factory):
    """One masked run with the restore and one without, each saved by FSDPCheckpointManager."""
    root = tmp_path_factory.mktemp("masked_ckpt")
    masks = root / "masks.npz"
    save_masks(masks, masks_from_checkpoint(tiny_base, "nonprincipal", alpha=0.5, rank_k=4))
    out = {}
    for restore in (True, False):
        tag = "restored" if restore else "control"
        mp.spawn(train_masked, args=(WORLD, free_port(), str(tiny_base), str(masks), str(root / f"{tag}.pt"), restore,
                                     str(root / f"reports_{tag}"), 2, str(root / tag)), nprocs=WORLD, join=True)
        out[tag] = (root / tag, torch.load(root / f"{tag}.pt")["state"])
    return masks, out


def test_merger_output_reads_back_as_the_trained_weights_in_bf16(masked_runs, tmp_path):
    _, runs = masked_runs
    actor, state = runs["restored"]
    assert sorted(p.name for p in actor.glob("model_world_size_*")) == ["model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]
    merged = tmp_path / "merged"
    merge_full(actor, merged, info={"step": 2})
    assert json.loads((merged / CKPT_INFO).read_text()) == {"step": 2}
    with Checkpoint(merged) as ckpt:
        names = set(ckpt.names())
        assert names == set(state)  # tied lm_head: stored once, as in the base
        for name in names:
            t = ckpt.load(name)
            assert t.dtype == torch.bfloat16
            assert torch.equal(t, state[name].to(torch.bfloat16)), name


def test_frozen_check_passes_with_the_restore_and_fails_without(tiny_base, masked_runs, tmp_path):
    masks, runs = masked_runs
    merged = {}
    for tag, (actor, _) in runs.items():
        merged[tag] = tmp_path / tag
        merge_full(actor, merged[tag], info={"step": 2})
    report = check_frozen(tiny_base, merged["restored"], masks, report=tmp_path / "ok.json")
    assert report["ok"] and report["changed_frozen_entries"] == 0 and report["frozen_entries"] > 0
    with pytest.raises(FrozenEntriesChanged, match="frozen entries differ from the base"):
        check_frozen(tiny_base, merged["control"], masks)


def test_lora_checkpoint_folds_to_peft_merge_and_the_merger_does_not(tiny_base, tmp_path):
    actor = tmp_path / "lora_actor"
    mp.spawn(train_lora, args=(WORLD, free_port(), str(tiny_base), str(actor), str(tmp_path / "lora.pt"), LORA, 2),
             nprocs=WORLD, join=True)
    trained = {k.replace(".default.weight", ".weight"): v for k, v in torch.load(tmp_path / "lora.pt")["state"].items() if "lora_" in k}

    adapter, meta = read_fsdp_adapter(actor)
    assert meta["r"] == LORA["r"] and meta["lora_alpha"] == LORA["lora_alpha"]
    assert sorted(adapter) == sorted(trained)
    assert all(adapter[k].dtype == torch.float32 and torch.equal(adapter[k], trained[k]) for k in adapter)  # fp32, not rounded

    out = tmp_path / "folded"
    fold_adapter(tiny_base, adapter, out, rank=LORA["r"], alpha=LORA["lora_alpha"], target_modules=LORA["target_modules"], meta=meta)
    ref = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32),
                         LoraConfig(init_lora_weights=False, **LORA))
    set_peft_model_state_dict(ref, trained)
    expected = {k: v.to(torch.bfloat16) for k, v in ref.merge_and_unload().state_dict().items()}
    got = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(got[k], expected[k]) for k in got)
    base = load_file(str(tiny_base / "model.safetensors"))
    assert not torch.equal(got["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])

    # what verl's own merger makes of it: the base weights untouched, the adapter beside them (#7285)
    target = tmp_path / "verl_merged"
    subprocess.run([sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", str(actor),
                    "--target_dir", str(target)], check=True, capture_output=True)
    merged = load_file(str(target / "model.safetensors"))
    assert all(torch.equal(merged[k], base[k]) for k in base)
    assert (target / "lora_adapter" / "adapter_model.safetensors").is_file()
    with pytest.raises(RuntimeError, match="fold it"):
        merge_full(actor, tmp_path / "refused", info={})
