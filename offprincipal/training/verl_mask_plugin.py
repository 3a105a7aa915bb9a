"""Masked sparse fine-tuning inside verl 0.9.1: a plugin module verl imports into every worker.

A masked verl run sets ``actor_rollout_ref.model.external_lib=offprincipal.training.verl_mask_plugin``
(verl imports it in the driver and in each worker's ``init_model``, before any engine is
built) and the environment variable ``PNT_MASK_PATH`` (a :mod:`offprincipal.training.masks`
``.npz`` of trainable entries, keyed by HF parameter name). Importing this module

* swaps verl's FSDP2 language-model engine (``FSDPEngineWithLMHead`` under every device and
  vendor key it is registered for) for :class:`MaskedFSDPEngine`, and
* wraps ``EngineRegistry.new`` so that, while ``PNT_MASK_PATH`` is set, building any training
  (not forward-only) language-model engine that is not a :class:`MaskedFSDPEngine` -- FSDP1,
  another backend, a registry the swap missed -- raises at once instead of training dense weights.

:class:`MaskedFSDPEngine` follows verl.md §4.2: after the model and optimizer are built it
shards each mask like its parameter (``distribute_tensor`` with the parameter's mesh and
placements); parameters without a mask (embeddings, norms, ``lm_head``) are frozen entirely.
``optimizer_step`` (i) zeroes the frozen gradient entries **before** verl clips the gradient
norm, so they neither move through the gradient nor count in the norm, then runs verl's own
step (clip, skip on a non-finite norm, AdamW), then (ii) writes the stored fp32 values of the
frozen entries back, because AdamW's weight decay moves every weight it holds. Frozen entries
therefore stay bitwise equal to the base, whatever the weight decay.

Each rank then records ``rank_<R>.json`` (tensors masked, trainable share) in
``PNT_MASK_REPORT_DIR``; the launcher refuses a run in which not every rank did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor, distribute_tensor
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

MASK_ENV = "PNT_MASK_PATH"
REPORT_ENV = "PNT_MASK_REPORT_DIR"
MODEL_TYPE = "language_model"


class MaskedFSDPEngine(FSDPEngineWithLMHead):
    """verl's FSDP2 actor engine with frozen entries held bitwise at their base values."""

    _masked: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def _build_model_optimizer(self):
        super()._build_model_optimizer()
        if self.engine_config.forward_only:  # the reference model: no optimizer, nothing to mask
            return
        path = os.environ.get(MASK_ENV)
        if not path:
            raise RuntimeError(f"MaskedFSDPEngine built for training, but {MASK_ENV} is not set")
        from offprincipal.training.masks import load_masks

        self.install_masks(load_masks(path), source=path)
        self._write_report(os.environ.get(REPORT_ENV))

    # -- masks ---------------------------------------------------------------------------
    def install_masks(self, masks: dict[str, torch.Tensor], *, source: str = "<masks>") -> None:
        """Shard ``masks`` ({HF name: bool trainable}) like the parameters and keep the frozen values."""
        if self.engine_config.strategy != "fsdp2":
            raise RuntimeError(f"masked runs need actor.strategy=fsdp2 (elementwise masks on HF names), got {self.engine_config.strategy!r}")
        if self.model_config.lora_rank > 0:
            raise RuntimeError("a mask cannot be combined with LoRA (masks act on full weights)")
        params = dict(self.module.named_parameters())
        unknown = sorted(set(masks) - set(params))
        if unknown:
            raise KeyError(f"{source}: masks for tensors the model does not have: {unknown[:3]}")
        entries = []
        trainable = total = 0
        for name, p in params.items():
            full_shape = tuple(p.shape)  # a DTensor reports the global shape
            if name in masks:
                mask = masks[name].to(torch.bool)
                if tuple(mask.shape) != full_shape:
                    raise ValueError(f"{source}: {name}: mask shape {tuple(mask.shape)} != parameter shape {full_shape}")
                trainable += int(mask.sum())
                total += mask.numel()
            else:
                mask = torch.zeros(full_shape, dtype=torch.bool)  # not a mask target: frozen whole
            local_p = _local(p)
            if isinstance(p, DTensor):
                keep = distribute_tensor(mask.to(local_p.device), p.device_mesh, p.placements).to_local()
            else:
                keep = mask.to(local_p.device)
            if tuple(keep.shape) != tuple(local_p.shape):
                raise RuntimeError(f"{name}: local mask shard {tuple(keep.shape)} != local parameter shard {tuple(local_p.shape)}")
            frozen = ~keep
            entries.append((p, keep.to(local_p.dtype), frozen, local_p.detach()[frozen].clone()))
        self._masked = entries
        self._mask_stats = {"tensors": len(masks), "trainable": trainable, "total": total, "source": source}

    def _write_report(self, report_dir: str | None) -> None:
        if not report_dir:
            return
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        stats = self._mask_stats
        record = {"rank": rank, "engine": type(self).__name__, **stats,
                  "density": stats["trainable"] / stats["total"] if stats["total"] else None}
        tmp = out / f".rank_{rank}.json.tmp"
        tmp.write_text(json.dumps(record, sort_keys=True) + "\n")
        os.replace(tmp, out / f"rank_{rank}.json")

    def mask_gradients(self) -> None:
        for p, keep, _, _ in self._masked:
            if p.grad is not None:
                grad = _local(p.grad)
                grad.mul_(keep.to(grad.device))

    @torch.no_grad()
    def restore_frozen(self) -> None:
        for p, _, frozen, values in self._masked:
            local = _local(p)
            local.masked_scatter_(frozen.to(local.device), values.to(local.device))

    def optimizer_step(self):
        if self._masked is None:
            raise RuntimeError("MaskedFSDPEngine.optimizer_step before the masks were installed")
        self.mask_gradients()  # before verl clips: frozen entries do not count in the norm
        grad_norm = super().optimizer_step()
        self.restore_frozen()  # after AdamW: weight decay moved every weight it holds
        return grad_norm


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (the same storage), or the tensor itself."""
    return t._local_tensor if isinstance(t, DTensor) else t


def _swap_registry() -> int:
    """Register :class:`MaskedFSDPEngine` wherever verl registered its FSDP2 LM engine."""
    registry = EngineRegistry._engines.get(MODEL_TYPE, {}).get("fsdp2", {})
    swapped = 0
    for key, cls in list(registry.items()):
        if cls is FSDPEngineWithLMHead:
            registry[key] = MaskedFSDPEngine
            swapped += 1
    if not swapped and MaskedFSDPEngine not in registry.values():
        raise RuntimeError("verl registers no FSDPEngineWithLMHead for fsdp2: this plugin does not fit this verl version")
    return swapped


def _guard_registry() -> None:
    """While a mask is configured, building a training LM engine that does not mask fails."""
    if getattr(EngineRegistry.new, "_offprincipal_guard", False):
        return
    original = EngineRegistry.new.__func__

    def new(cls, model_type, backend, *args, **kwargs):
        engine = original(cls, model_type, backend, *args, **kwargs)
        config = kwargs.get("engine_config")
        training = config is not None and not getattr(config, "forward_only", False)
        if os.environ.get(MASK_ENV) and model_type == MODEL_TYPE and training and not isinstance(engine, MaskedFSDPEngine):
            raise RuntimeError(
                f"{MASK_ENV} is set (a masked run) but verl built {type(engine).__name__} for backend {backend!r}, "
                "which would train every weight; masked runs need actor.strategy=fsdp2 and this plugin's engine"
            )
        return engine

    new._offprincipal_guard = True
    EngineRegistry.new = classmethod(new)


_swap_registry()
_guard_registry()
