"""Trainer callbacks of the TRL backend: mask enforcement, per-step log, checkpoint schedule.

* :class:`MaskEnforcer` keeps every entry outside the trainable mask bitwise at its base
  value: a post-accumulate-grad hook zeroes the masked gradient entries as soon as they are
  accumulated -- before ``Trainer`` clips the gradient norm, so frozen entries neither move
  nor count in the norm -- and ``on_optimizer_step`` writes the frozen base values back after
  every AdamW step (weight decay moves every weight the optimizer holds, gradient or not).
  This is verl.md §4.2's design (mask before clipping, restore after the step).
* :class:`StepLogger` writes one JSON line per *training* step from the trainer's logs.
* :class:`CheckpointSaver` saves the policy at the spec's ``save_steps``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Mapping

import torch
from transformers import TrainerCallback


class MaskEnforcer(TrainerCallback):
    """Freeze the entries of each named parameter where ``masks[name]`` is False."""

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.masks = dict(masks)
        self._entries: list[tuple[str, torch.nn.Parameter, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._hooks = []
        self.restores = 0

    def attach(self, model: torch.nn.Module) -> None:
        if self._entries:
            return
        params = dict(model.named_parameters())
        missing = sorted(set(self.masks) - set(params))
        if missing:
            raise KeyError(f"mask names not found among the model's parameters: {missing[:3]}")
        for name, mask in self.masks.items():
            p = params[name]
            if tuple(mask.shape) != tuple(p.shape):
                raise ValueError(f"{name}: mask shape {tuple(mask.shape)} != parameter shape {tuple(p.shape)}")
            keep = mask.to(device=p.device, dtype=torch.bool)
            frozen = ~keep
            keep_f = keep.to(p.dtype)
            frozen_values = p.detach()[frozen].clone()  # base values of the frozen entries, row-major
            self._entries.append((name, p, keep_f, frozen, frozen_values))
            self._hooks.append(p.register_post_accumulate_grad_hook(self._make_hook(keep_f)))

    @staticmethod
    def _make_hook(keep_f: torch.Tensor) -> Callable:
        def hook(param: torch.Tensor) -> None:
            if param.grad is not None:
                param.grad.mul_(keep_f)

        return hook

    def mask_grads(self) -> None:
        for _, p, keep_f, _, _ in self._entries:
            if p.grad is not None:
                p.grad.mul_(keep_f)

    @torch.no_grad()
    def restore(self) -> None:
        for _, p, _, frozen, values in self._entries:
            p.data.masked_scatter_(frozen, values)
        self.restores += 1

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # -- callback events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.attach(model)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.mask_grads()  # idempotent safety net (the hooks already masked before clipping)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.restore()

    def on_train_end(self, args, state, control, **kwargs):
        self.detach()


def _finite(x):
    if isinstance(x, torch.Tensor):
        x = x.item()
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x) if math.isfinite(float(x)) else None
    return None


class StepLogger(TrainerCallback):
    """One JSON line per training step (``updates_per_step`` optimizer updates).

    Values of the step's optimizer updates are averaged (a key missing from an update, such
    as the rollout metrics logged only with the first update of a step, is averaged over the
    updates that have it). Keys are renamed through ``rename``; others keep trl's name.
    """

    RENAME = {
        "learning_rate": "lr",
        "reward": "reward_mean",
        "entropy": "entropy_loss_pass",
        "kl_base/exact": "kl",
        "kl_base/k1": "kl_k1",
        "kl_base/k3": "kl_k3",
        "kl_base/entropy": "entropy",
        "kl_base/tokens": "kl_tokens",
        "completions/mean_length": "response_length_mean",
        "completions/clipped_ratio": "response_clip_ratio",
        "rewards/task_reward/mean": "task_reward_mean",
        "rewards/task_reward/std": "task_reward_std",
        "rewards/soft_overlong_punishment_reward/mean": "overlong_penalty_mean",
        "rewards/soft_overlong_punishment_reward/std": "overlong_penalty_std",
    }

    def __init__(self, path: str | Path, updates_per_step: int):
        self.path = Path(path)
        self.updates_per_step = updates_per_step
        self.rows: list[dict] = []
        self._acc: dict[str, list[float]] = {}
        self._t0 = None
        self._fh = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w")
        self._t0 = time.perf_counter()
        self._t_step = self._t0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return  # the end-of-training summary
        for key, val in logs.items():
            v = _finite(val)
            if v is not None:
                self._acc.setdefault(self.RENAME.get(key, key), []).append(v)
        if state.global_step % self.updates_per_step:
            return
        now = time.perf_counter()
        step = state.global_step // self.updates_per_step
        # rollout/KL metrics of row `step` come from the policy after `step - 1` training steps
        row = {"step": step, "rollout_policy_step": step - 1, "updates": state.global_step}
        row.update({k: sum(v) / len(v) for k, v in self._acc.items()})
        row["step_seconds"] = now - self._t_step
        row["wall_seconds"] = now - self._t0
        self._t_step = now
        self._acc = {}
        self.rows.append(row)
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def on_train_end(self, args, state, control, **kwargs):
        self.close()


class CheckpointSaver(TrainerCallback):
    """Call ``save(step)`` at the end of every training step listed in ``steps`` (0: before training)."""

    def __init__(self, steps, updates_per_step: int, save: Callable[[int], None]):
        self.steps = set(steps)
        self.updates_per_step = updates_per_step
        self.save = save

    def on_train_begin(self, args, state, control, **kwargs):
        if 0 in self.steps and state.global_step == 0:
            self.save(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.updates_per_step == 0:
            step = state.global_step // self.updates_per_step
            if step in self.steps:
                self.save(step)
