"""Fold a trained LoRA/PiSSA adapter into full weights: peft's merge in fp32, one bf16 rounding.

``python -m verl.model_merger`` does not fold adapters (verl issue #7285): it writes the base
weights unchanged and the adapter beside them, rounded to bf16, with ``lora_alpha`` 0 when
``lora_train_meta.json`` is missing -- analysed as a checkpoint, that is a 100 %-sparse
"update". This module folds instead:

1. :func:`read_fsdp_adapter` takes the **fp32** adapter tensors straight from verl's FSDP
   shards (``model_world_size_W_rank_R.pt``, DTensor shards concatenated along their shard
   dimension) and r / alpha from ``lora_train_meta.json``;
2. :func:`fold_adapter` checks the adapter (non-zero ``B·A``; rank and alpha equal to the
   configured ones, alpha > 0), loads the weights the adapter was trained on in fp32 (the
   base for LoRA, the residual model for PiSSA), lets peft merge (``merge_and_unload``) and
   rounds the result to bf16 once.

For PiSSA the folded checkpoint is ``W_res + s·B·A``; the analyses compare it against the
ORIGINAL base (the run manifest's ``reference_base``), never against the residual.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch

from offprincipal.io import atomic_dir

LORA_META = "lora_train_meta.json"


class AdapterError(ValueError):
    """An adapter that cannot be folded as configured; the message names the file or tensor."""


def _merge_shards(key: str, shards: list) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    if not isinstance(shards[0], DTensor):
        for r, s in enumerate(shards[1:], 1):
            if not torch.equal(s, shards[0]):
                raise AdapterError(f"{key}: a replicated tensor differs between rank 0 and rank {r}")
        return shards[0].clone()
    placement = shards[0].placements[-1]
    locals_ = [s._local_tensor for s in shards]
    if placement.is_replicate():
        return locals_[0].clone()
    if placement.is_shard():
        return torch.cat(locals_, dim=placement.dim).contiguous()
    raise AdapterError(f"{key}: unsupported placement {placement}")


def read_fsdp_adapter(actor_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``({peft key: fp32 tensor}, lora_train_meta)`` of a verl ``global_step_N/actor`` directory."""
    actor_dir = Path(actor_dir)
    cfg = actor_dir / "fsdp_config.json"
    meta_path = actor_dir / LORA_META
    if not cfg.is_file():
        raise AdapterError(f"{actor_dir}: no fsdp_config.json (not a verl FSDP checkpoint)")
    if not meta_path.is_file():
        raise AdapterError(f"{meta_path}: missing; verl's merger would silently use lora_alpha=0, so the fold refuses")
    world = int(json.loads(cfg.read_text())["world_size"])
    shards: dict[str, list] = {}
    for rank in range(world):
        path = actor_dir / f"model_world_size_{world}_rank_{rank}.pt"
        if not path.is_file():
            raise AdapterError(f"{actor_dir}: shard {path.name} of {world} is missing")
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        for key, value in state.items():
            if "lora_" in key:
                shards.setdefault(key, []).append(value)
        del state
    if not shards:
        raise AdapterError(f"{actor_dir}: the shards hold no lora_ tensors (not an adapter run)")
    adapter = {}
    for key, parts in shards.items():
        if len(parts) != world:
            raise AdapterError(f"{actor_dir}: {key} is in {len(parts)} of {world} shards")
        # peft's saved-adapter naming: no adapter name ("default") in the key
        adapter[key.replace(".default.weight", ".weight")] = _merge_shards(key, parts).float()
    return adapter, json.loads(meta_path.read_text())


def read_peft_adapter(adapter_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``({peft key: fp32 tensor}, adapter_config)`` of a peft adapter directory."""
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return {k: v.float() for k, v in weights.items()}, cfg


def check_adapter(adapter: Mapping[str, torch.Tensor], *, rank: int, alpha: float, meta: Mapping, where: str) -> dict:
    """Rank and alpha as configured (and > 0), every A/B pair shaped for that rank, B·A not all zero."""
    meta_alpha, meta_rank = meta.get("lora_alpha"), meta.get("r")
    if meta_alpha is None or float(meta_alpha) <= 0:
        raise AdapterError(f"{where}: lora_alpha is {meta_alpha!r}; folding with it would drop the update")
    if float(meta_alpha) != float(alpha):
        raise AdapterError(f"{where}: lora_alpha {meta_alpha} differs from the configured {alpha}")
    if meta_rank is not None and int(meta_rank) != int(rank):
        raise AdapterError(f"{where}: rank {meta_rank} differs from the configured {rank}")
    a_keys = sorted(k for k in adapter if ".lora_A." in k)
    if not a_keys:
        raise AdapterError(f"{where}: no lora_A tensors")
    zero = 0
    for ka in a_keys:
        kb = ka.replace(".lora_A.", ".lora_B.")
        if kb not in adapter:
            raise AdapterError(f"{where}: {ka} has no {kb}")
        A, B = adapter[ka], adapter[kb]
        if A.shape[0] != rank or B.shape[1] != rank:
            raise AdapterError(f"{where}: {ka} / {kb} have shapes {tuple(A.shape)} / {tuple(B.shape)}, not rank {rank}")
        if not torch.any(B @ A):
            zero += 1
    if zero == len(a_keys):
        raise AdapterError(f"{where}: B·A is zero for all {zero} adapted matrices (the adapter never moved)")
    return {"modules": len(a_keys), "zero_modules": zero}


def fold_adapter(
    weights_dir: str | os.PathLike,
    adapter: Mapping[str, torch.Tensor],
    out_dir: str | os.PathLike,
    *,
    rank: int,
    alpha: float,
    target_modules: list[str],
    meta: Mapping,
    info: Mapping | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> dict:
    """Fold ``adapter`` into the fp32 weights in ``weights_dir`` and save them in ``dtype`` (atomic)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checked = check_adapter(adapter, rank=rank, alpha=alpha, meta=meta, where=str(info.get("adapter", "adapter") if info else "adapter"))
    model = AutoModelForCausalLM.from_pretrained(str(weights_dir), dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    result = set_peft_model_state_dict(peft_model, dict(adapter))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise AdapterError(f"adapter tensors that match no module of {weights_dir}: {unexpected[:3]}")
    loaded = {k for k, _ in peft_model.named_parameters() if "lora_" in k}
    if len(loaded) != len(adapter):
        raise AdapterError(f"{weights_dir}: {len(adapter)} adapter tensors, but the model has {len(loaded)} LoRA parameters")
    merged = peft_model.merge_and_unload()  # fp32: W + (alpha / r) · B @ A
    merged = merged.to(dtype)  # the one rounding
    merged.config.dtype = dtype
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(weights_dir)).save_pretrained(tmp)
        if info is not None:
            from .run_directory import CKPT_INFO

            (tmp / CKPT_INFO).write_text(json.dumps({**info, **checked}, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)
    return checked
