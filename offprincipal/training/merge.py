"""verl checkpoints to HF bf16 directories, and the bitwise check of masked runs' frozen entries.

:func:`merge_step` turns one saved step of a verl run (``global_step_N/actor`` FSDP shards in
the run's ``state_dir``) into an HF directory the analyses read like any checkpoint:

* full fine-tuning and masked runs: ``python -m verl.model_merger merge --backend fsdp``
  (gathers the DTensor shards, casts to bf16, writes safetensors + config + tokenizer);
* LoRA / PiSSA runs: :mod:`offprincipal.training.fold` (the merger would leave the adapter
  unfolded), from the fp32 adapter in the shards onto the weights it was trained on.

:func:`check_frozen` verifies, on a merged checkpoint of a masked run, that every entry the
mask froze -- and every tensor without a mask -- equals the base bitwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from offprincipal.io import atomic_dir, write_json

from .run_directory import CKPT_INFO, FINAL, read_manifest
from .spec import RunSpec


class FrozenEntriesChanged(RuntimeError):
    """A masked run moved entries its mask froze; the message names the tensors."""


def merge_full(actor_dir: str | os.PathLike, out_dir: str | os.PathLike, *, info: dict, python: str = sys.executable) -> None:
    """``verl.model_merger`` of one FSDP checkpoint into ``out_dir`` (atomically)."""
    actor_dir = Path(actor_dir)
    if not (actor_dir / "fsdp_config.json").is_file():
        raise FileNotFoundError(f"{actor_dir}: not a verl FSDP checkpoint (no fsdp_config.json)")
    with atomic_dir(out_dir) as tmp:
        cmd = [python, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
               "--local_dir", str(actor_dir), "--target_dir", str(tmp)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"verl.model_merger failed on {actor_dir} (status {result.returncode}):\n{result.stderr[-4000:]}")
        if (tmp / "lora_adapter").exists():
            raise RuntimeError(f"{actor_dir} holds a LoRA adapter; fold it (offprincipal.training.fold), do not merge it")
        if not (tmp / "config.json").is_file() or not list(tmp.glob("*.safetensors")):
            raise RuntimeError(f"verl.model_merger wrote no HF checkpoint for {actor_dir}")
        (tmp / CKPT_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            if f.is_file():
                f.chmod(0o644)


def merge_step(run_dir: str | os.PathLike, step: int | str, out_dir: str | os.PathLike, *, python: str = sys.executable) -> dict:
    """Merge saved step ``step`` (an integer of ``save_steps``, or ``"final"``) of a verl run."""
    run = read_manifest(run_dir)
    if run["checkpoint_format"] != "verl_fsdp":
        raise ValueError(f"{run_dir}: checkpoints are {run['checkpoint_format']!r}, nothing to merge")
    spec = RunSpec.from_dict(run["spec"])
    if step == FINAL:
        rel, n = run["final"], spec.steps
    else:
        n = int(step)
        rel = run["checkpoints"].get(str(n))
        if rel is None:
            raise KeyError(f"{run_dir}: the run saved steps {sorted(run['checkpoints'], key=int)} and final, not {n}")
    actor = Path(run["state_dir"]) / rel
    info = {"step": n, "algorithm": spec.algorithm, "base": run["base"], "dtype": "bfloat16", "run": Path(run_dir).name,
            "merged_from": str(actor), "reference_base": run["reference_base"]}
    if spec.adapter == "none":
        merge_full(actor, out_dir, info=info, python=python)
        return info
    from .fold import fold_adapter, read_fsdp_adapter

    adapter, meta = read_fsdp_adapter(actor)
    info["adapter"] = str(actor)
    info["folded"] = f"peft merge_and_unload in fp32 onto {run['base']}, one bf16 rounding"
    info.update(fold_adapter(run["base"], adapter, out_dir, rank=spec.adapter_rank, alpha=spec.adapter_alpha,
                             target_modules=list(spec.adapter_target_modules), meta=meta, info=info))
    return info


def check_frozen(base_dir, ckpt_dir, mask_file, report: str | os.PathLike | None = None) -> dict:
    """Every entry outside the trainable mask, and every tensor without a mask, is bitwise the
    base's (the base cast to the checkpoint's dtype when they differ, e.g. an fp32-stored base)."""
    from offprincipal.checkpoints.reader import Checkpoint

    from .masks import load_masks

    masks = load_masks(mask_file)
    changed: dict[str, int] = {}
    frozen_total = 0
    with Checkpoint(base_dir) as base, Checkpoint(ckpt_dir) as ckpt:
        extra, missing = sorted(set(ckpt.names()) - set(base.names())), sorted(set(base.names()) - set(ckpt.names()))
        if extra or missing:
            raise FrozenEntriesChanged(f"{ckpt_dir}: tensors differ from the base {base_dir}: extra {extra[:3]}, missing {missing[:3]}")
        unknown = sorted(set(masks) - set(base.names()))
        if unknown:
            raise KeyError(f"{mask_file}: masks for tensors the base does not have: {unknown[:3]}")
        for name in ckpt.names():
            w = ckpt.load(name)
            w0 = base.load(name)
            if w0.dtype != w.dtype:
                w0 = w0.to(w.dtype)
            frozen = ~masks[name] if name in masks else torch.ones(w.shape, dtype=torch.bool)
            frozen_total += int(frozen.sum())
            # bitwise: compare the raw bits, so -0.0 vs 0.0 and NaN payloads count as changes
            bits, bits0 = w.view(torch.int16 if w.element_size() == 2 else torch.int32), w0.view(
                torch.int16 if w0.element_size() == 2 else torch.int32)
            n = int((bits[frozen] != bits0[frozen]).sum())
            if n:
                changed[name] = n
    record = {"checkpoint": str(ckpt_dir), "base": str(base_dir), "mask_file": str(mask_file),
              "frozen_entries": frozen_total, "changed_frozen_entries": sum(changed.values()), "tensors_changed": changed,
              "ok": not changed}
    if report is not None:
        write_json(report, record)
    if changed:
        worst = sorted(changed.items(), key=lambda kv: -kv[1])[:3]
        raise FrozenEntriesChanged(
            f"{ckpt_dir}: {sum(changed.values())} of {frozen_total} frozen entries differ from the base {base_dir} "
            f"(e.g. {worst}); the mask plugin did not hold them"
        )
    return record
