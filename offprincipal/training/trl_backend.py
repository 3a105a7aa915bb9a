"""Single-machine training backend: a :class:`~offprincipal.training.spec.RunSpec` run with TRL.

* DAPO / GRPO: ``trl.GRPOTrainer`` (``loss_type="dapo"`` = verl's token-mean, ``"grpo"`` =
  seq-mean-token-mean; ``epsilon``/``epsilon_high`` = clip_ratio_low/high; ``beta=0``), with
  DAPO's soft overlong punishment from ``trl.rewards.get_soft_overlong_punishment`` added as a
  second reward weighted by ``overlong_penalty_factor`` (what verl's ``dapo`` reward manager
  adds to the score). Dynamic sampling, which TRL lacks, drops degenerate groups (all rewards
  equal) from the loss without refilling the batch.
* SFT: ``trl.SFTTrainer`` on prompt/completion pairs (loss on completion tokens).
* fp32 master weights and compute on the CPU (no autocast), AdamW with one parameter group
  (weight decay on every trainable tensor, as verl), constant learning rate.
* Masks (:mod:`offprincipal.training.masks`) via :class:`~offprincipal.training.callbacks.MaskEnforcer`.
* KL to the base policy, logged every step and never in the loss: on the step's rollouts (RL)
  or training batch (SFT), before that step's update, against a frozen fp32 copy of the
  *original* base (also for LoRA and PiSSA, whose adapter-off model is not the base for PiSSA).
  Logged: ``kl`` = exact token-wise ``KL(π_θ(·|ctx) ‖ π_base(·|ctx))`` summed over the vocabulary
  and averaged over completion tokens; ``kl_k1`` = mean ``log π_θ(y) − log π_base(y)`` on the
  sampled tokens; ``kl_k3`` = mean ``r − log r − 1`` with ``r = π_base(y)/π_θ(y)`` (trl's and
  verl's ``low_var_kl`` estimator, unclipped); ``entropy`` = mean token entropy of π_θ.
* Checkpoints: ``out_dir/step_{N}`` and ``out_dir/final``, HF layout (config + tokenizer),
  weights cast to ``save_dtype`` (bf16 by default), adapters merged into full weights.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from offprincipal.io import atomic_dir

from .callbacks import CheckpointSaver, MaskEnforcer, StepLogger
from .masks import is_mask_target, load_masks, mask_densities, masks_for_spec, save_masks
from .run_directory import CKPT_INFO, FINAL, MASK_FILE, METRICS_FILE, RUN_MANIFEST, checkpoint_dir_name, reference_base, write_manifest
from .spec import RunSpec

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


# ---------------------------------------------------------------------------- KL probe


@torch.no_grad()
def kl_to_base(
    policy: torch.nn.Module,
    base: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
) -> dict[str, float]:
    """Token-wise KL(π_θ ‖ π_base) on the positions that predict ``target_ids``.

    ``target_ids``/``target_mask`` (B × T) are the last T tokens of ``input_ids``; the
    logits at positions ``[-T-1, -1)`` predict them.
    """
    t = target_ids.shape[1]
    was_training = policy.training
    policy.eval()
    try:
        lp = policy(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=t + 1).logits[:, :-1].float()
    finally:
        policy.train(was_training)
    lb = base(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=t + 1).logits[:, :-1].float()
    logp, logq = F.log_softmax(lp, -1), F.log_softmax(lb, -1)
    p = logp.exp()
    exact = (p * (logp - logq)).sum(-1)
    entropy = -(p * logp).sum(-1)
    idx = target_ids.unsqueeze(-1)
    log_ratio = (logp.gather(-1, idx) - logq.gather(-1, idx)).squeeze(-1)  # log π_θ(y) − log π_base(y)
    k3 = torch.exp(-log_ratio) + log_ratio - 1
    m = target_mask.float()
    n = m.sum().clamp(min=1.0)

    def mean(x):
        return float((x * m).sum() / n)

    return {
        "exact": mean(exact),
        "k1": mean(log_ratio),
        "k3": mean(k3),
        "entropy": mean(entropy),
        "tokens": float(m.sum()),
    }


def _record_kl(metrics: dict, stats: dict[str, float]) -> None:
    for key, val in stats.items():
        metrics[f"kl_base/{key}"].append(val)


# ---------------------------------------------------------------------------- trainers


class _SpecTrainerMixin:
    """AdamW exactly as the spec says (one group, decay on all trainable tensors) + KL probe."""

    _spec: RunSpec
    _kl_base: torch.nn.Module | None = None

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            params = [p for p in opt_model.parameters() if p.requires_grad]
            s = self._spec
            self.optimizer = torch.optim.AdamW(
                params, lr=s.lr, betas=tuple(s.betas), eps=s.eps, weight_decay=s.weight_decay, foreach=False
            )
        return self.optimizer


def _make_rl_trainer_cls():
    from trl import GRPOTrainer

    class SpecGRPOTrainer(_SpecTrainerMixin, GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return out
            if self._spec.dynamic_sampling:
                self._filter_degenerate_groups(out)
            if self._kl_base is not None:
                ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
                att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
                stats = kl_to_base(
                    self.accelerator.unwrap_model(self.model),
                    self._kl_base,
                    ids,
                    att,
                    out["completion_ids"],
                    out["completion_mask"],
                )
                _record_kl(self._metrics["train"], stats)
            return out

        def _filter_degenerate_groups(self, out):
            """DAPO dynamic sampling without refill: groups whose rewards are all equal (zero
            advantage everywhere) leave the loss and its token normaliser."""
            n = self.num_generations
            adv = out["advantages"]
            keep_group = adv.view(-1, n).abs().sum(1) > 0
            keep = keep_group.repeat_interleave(n)
            out["completion_mask"] = out["completion_mask"] * keep.unsqueeze(1).to(out["completion_mask"].dtype)
            out["num_items_in_batch"] = out["completion_mask"].sum()
            self._metrics["train"]["dynamic_sampling/groups_kept"].append(float(keep_group.sum()))

    return SpecGRPOTrainer


def _make_sft_trainer_cls():
    from trl import SFTTrainer

    class SpecSFTTrainer(_SpecTrainerMixin, SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self._kl_base is not None and model.training:
                labels = inputs["labels"]
                target = labels[:, 1:]
                target_mask = target != -100
                stats = kl_to_base(
                    self.accelerator.unwrap_model(model),
                    self._kl_base,
                    inputs["input_ids"],
                    inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])),
                    target.clamp(min=0),
                    target_mask,
                )
                _record_kl(self._metrics["train"], stats)
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    return SpecSFTTrainer


# ---------------------------------------------------------------------------- helpers


def _load_model(base_dir, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)


def _peft_config(spec: RunSpec):
    from peft import LoraConfig

    return LoraConfig(
        r=spec.adapter_rank,
        lora_alpha=spec.adapter_alpha,
        lora_dropout=spec.adapter_dropout,
        target_modules=list(spec.adapter_target_modules),
        init_lora_weights="pissa" if spec.adapter == "pissa" else True,
        bias="none",
        task_type="CAUSAL_LM",
    )


def full_weights_model(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A detached copy with any PEFT adapter merged into full weights, cast to ``dtype``."""
    m = copy.deepcopy(model)
    if hasattr(m, "merge_and_unload"):
        m = m.merge_and_unload()
    m = m.to(dtype)
    m.config.dtype = dtype
    return m


def save_policy(model, tokenizer, path: str | os.PathLike, *, dtype: torch.dtype, info: dict | None = None) -> None:
    """Save ``model`` (merged, cast) as an HF-layout directory, atomically."""
    full = full_weights_model(model, dtype)
    with atomic_dir(path) as tmp:
        full.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if info is not None:
            (tmp / CKPT_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)  # safetensors writes 0600; results are meant to be shared
    del full


def _check_prompts(tokenizer, prompts, max_len: int) -> None:
    for p in prompts:
        n = len(tokenizer(p, add_special_tokens=False)["input_ids"])
        if n > max_len:
            raise ValueError(f"prompt {p!r} has {n} tokens > max_prompt_length={max_len}")


def _reward_wrapper(reward_fn: Callable) -> Callable:
    def task_reward(prompts, completions, **kw):
        return [float(r) for r in reward_fn(prompts, completions, **kw)]

    return task_reward


def _versions() -> dict:
    import peft
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
    }


# ---------------------------------------------------------------------------- steps of train()


def _check_train_data(spec: RunSpec, train_data: list[dict], reward_fn: Callable | None) -> None:
    if not train_data:
        raise ValueError("train_data is empty")
    if spec.is_rl:
        if reward_fn is None:
            raise ValueError(f"algorithm={spec.algorithm!r} needs a reward_fn")
        if any("prompt" not in row for row in train_data):
            raise ValueError("every RL train_data row needs a 'prompt'")
        if len(train_data) < spec.prompts_per_step:
            raise ValueError(f"train_data has {len(train_data)} prompts < prompts_per_step={spec.prompts_per_step}")
    elif any("prompt" not in row or "completion" not in row for row in train_data):
        raise ValueError("every SFT train_data row needs 'prompt' and 'completion'")


@contextlib.contextmanager
def _cpu_session(threads: int):
    """Torch thread count and warning filters for the duration of one run."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            # trl 1.16 still calls the renamed `is_gradient_checkpointing` (we never checkpoint)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        torch.set_num_threads(old_threads)


def _clear_outputs(out_dir: Path) -> None:
    """Remove what an earlier run left (checkpoints, manifest): a run directory is one run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("step_*"), out_dir / FINAL]:
        if stale.is_dir():
            shutil.rmtree(stale)
    (out_dir / RUN_MANIFEST).unlink(missing_ok=True)


def _load_policy(spec: RunSpec, base_dir: Path):
    """Tokenizer, trainable fp32 policy and (with ``log_kl``) a frozen fp32 copy of the base."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = _load_model(base_dir)
    model.config.use_cache = True
    kl_base = None
    if spec.log_kl:
        kl_base = _load_model(base_dir).eval()
        kl_base.requires_grad_(False)
    return tokenizer, model, kl_base


def _apply_masks(spec: RunSpec, model, out_dir: Path, mask_file) -> dict | None:
    """Masks from ``mask_file`` or the base weights, saved to the run directory; every
    parameter without a mask is frozen."""
    if spec.mask == "none":
        return None
    if mask_file is not None:
        masks = load_masks(mask_file)
    else:
        masks = masks_for_spec(spec, {n: p.detach() for n, p in model.named_parameters()})
    save_masks(out_dir / MASK_FILE, masks)
    for name, p in model.named_parameters():
        p.requires_grad_(name in masks)
    not_targets = [n for n in masks if not is_mask_target(n)]
    if not_targets:
        raise ValueError(f"mask file holds non-projection tensors: {not_targets[:3]}")
    return masks


def _apply_adapter(spec: RunSpec, model):
    if spec.adapter == "none":
        return model
    from peft import get_peft_model
    from transformers import set_seed

    set_seed(spec.seed)  # LoRA's A init draws from the global RNG
    return get_peft_model(model, _peft_config(spec))


def _common_args(spec: RunSpec, work_dir: Path) -> dict:
    """Trainer arguments shared by GRPO and SFT: CPU fp32, the spec's AdamW, no saving by HF."""
    ups = spec.updates_per_step
    return dict(
        output_dir=str(work_dir),
        use_cpu=True,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=spec.seed,
        data_seed=spec.seed,
        learning_rate=spec.lr,
        lr_scheduler_type="constant_with_warmup" if spec.lr_warmup_steps else "constant",
        warmup_steps=spec.lr_warmup_steps * ups,
        weight_decay=spec.weight_decay,
        adam_beta1=spec.betas[0],
        adam_beta2=spec.betas[1],
        adam_epsilon=spec.eps,
        max_grad_norm=spec.max_grad_norm,
        max_steps=spec.steps * ups,
        gradient_accumulation_steps=1,
        dataloader_num_workers=0,
    )


def _rl_trainer(spec: RunSpec, model, tokenizer, train_data, reward_fn, common: dict):
    from datasets import Dataset
    from trl import GRPOConfig
    from trl.rewards import get_soft_overlong_punishment

    _check_prompts(tokenizer, [r["prompt"] for r in train_data], spec.max_prompt_length)
    reward_funcs = [_reward_wrapper(reward_fn)]
    weights = [1.0]
    if spec.overlong_buffer:
        reward_funcs.append(
            get_soft_overlong_punishment(
                max_completion_len=spec.max_response_length, soft_punish_cache=spec.overlong_buffer_len
            )
        )
        weights.append(float(spec.overlong_penalty_factor))
    args = GRPOConfig(
        **common,
        per_device_train_batch_size=spec.mini_batch_prompts * spec.group_size,
        steps_per_generation=spec.prompts_per_step // spec.mini_batch_prompts,
        num_iterations=spec.ppo_epochs,
        num_generations=spec.group_size,
        max_completion_length=spec.max_response_length,
        temperature=spec.temperature,
        top_p=spec.top_p,
        top_k=0 if spec.top_k == -1 else spec.top_k,
        beta=spec.kl_coef if spec.kl_in_loss else 0.0,
        loss_type="dapo" if spec.loss_agg_mode == "token-mean" else "grpo",
        epsilon=spec.clip_ratio_low,
        epsilon_high=spec.clip_ratio_high,
        scale_rewards="group" if spec.norm_adv_by_std else "none",
        mask_truncated_completions=False,
        entropy_coef=spec.entropy_coeff,
        use_vllm=False,
        log_completions=False,
        remove_unused_columns=False,
        reward_weights=weights,
    )
    return _make_rl_trainer_cls()(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(list(train_data)),
        processing_class=tokenizer,
    )


def _sft_trainer(spec: RunSpec, model, tokenizer, train_data, common: dict):
    from datasets import Dataset
    from trl import SFTConfig

    rows = []
    for r in train_data:
        prompt, completion = r["prompt"], r["completion"]
        if prompt and completion and not prompt[-1].isspace() and not completion[0].isspace():
            completion = " " + completion  # keep word boundaries for whitespace tokenizers
        rows.append({"prompt": prompt, "completion": completion})
    args = SFTConfig(
        **common,
        per_device_train_batch_size=spec.sft_batch_size,
        max_length=spec.sft_max_length,
        completion_only_loss=spec.sft_completion_only_loss,
        packing=False,
        padding_free=False,
        dataset_num_proc=None,
    )
    return _make_sft_trainer_cls()(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


def _checkpoint_info(spec: RunSpec, base_dir: Path, step: int) -> dict:
    return {"step": step, "algorithm": spec.algorithm, "base": str(base_dir), "dtype": spec.save_dtype}


def _attach_callbacks(trainer, spec: RunSpec, masks, tokenizer, base_dir: Path, out_dir: Path):
    """Mask enforcement, the per-step log and the checkpoint schedule; returns
    ``(enforcer or None, step_logger, saved)`` where ``saved`` fills with {step: dir name}."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # the per-step JSON log replaces stdout dicts
    trainer.remove_callback(ProgressCallback)
    enforcer = None
    if masks is not None:
        enforcer = MaskEnforcer(masks)
        enforcer.attach(trainer.model)
        trainer.add_callback(enforcer)
    step_logger = StepLogger(out_dir / f".{METRICS_FILE}.partial", spec.updates_per_step)
    trainer.add_callback(step_logger)
    save_dtype = _DTYPES[spec.save_dtype]
    saved: dict[int, str] = {}

    def save(step: int) -> None:
        path = out_dir / checkpoint_dir_name(step)
        save_policy(trainer.model, tokenizer, path, dtype=save_dtype, info=_checkpoint_info(spec, base_dir, step))
        saved[step] = path.name

    trainer.add_callback(CheckpointSaver(spec.save_steps, spec.updates_per_step, save))
    return enforcer, step_logger, saved


def _manifest(spec, base_dir, base_checkpoint, trainer, saved, step_logger, enforcer, masks, timing) -> dict:
    rows = step_logger.rows
    final_step = trainer.state.global_step // spec.updates_per_step
    manifest = {
        "spec": spec.to_dict(),
        "base": str(base_dir),
        "reference_base": reference_base(base_checkpoint, base_dir),
        "backend": "trl",
        "checkpoint_format": "hf",
        "checkpoints": {str(k): saved[k] for k in sorted(saved)},
        "final": FINAL,
        "metrics": METRICS_FILE,
        "steps": final_step,
        "optimizer_updates": trainer.state.global_step,
        **timing,
        "versions": _versions(),
        "kl_estimator": {
            "kl": "exact per-token KL(pi_theta || pi_base) over the vocabulary, mean over completion tokens",
            "kl_k1": "mean log pi_theta(y) - log pi_base(y) on sampled tokens",
            "kl_k3": "mean r - log r - 1, r = pi_base(y)/pi_theta(y) (low_var_kl, unclipped)",
            "when": "on each step's rollouts (RL) / batch (SFT), before that step's update",
            "reference": "the original base checkpoint (also for LoRA and PiSSA)",
        },
        "last_row": rows[-1] if rows else None,
    }
    if masks is not None:
        dens = mask_densities(masks)
        total = sum(m.numel() for m in masks.values())
        manifest["mask"] = {
            "file": MASK_FILE,
            "kind": spec.mask,
            "density": sum(int(m.sum()) for m in masks.values()) / total,
            "density_per_matrix": dens,
            "frozen_outside_mask": "every other parameter (embeddings, norms) is frozen",
            "restores": enforcer.restores if enforcer else 0,
        }
    if spec.adapter != "none":
        manifest["adapter"] = {
            "kind": spec.adapter,
            "rank": spec.adapter_rank,
            "alpha": spec.adapter_alpha,
            "target_modules": list(spec.adapter_target_modules),
            "init": "peft PiSSA (init_lora_weights='pissa')" if spec.adapter == "pissa" else "peft default (B = 0)",
            "checkpoints": "adapters merged into full weights (merge_and_unload), then cast to save_dtype",
        }
    return manifest


# ---------------------------------------------------------------------------- entry


def train(
    spec: RunSpec,
    base_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    train_data: list[dict],
    reward_fn: Callable | None = None,
    threads: int = 2,
    mask_file: str | os.PathLike | None = None,
    base_checkpoint: str | None = None,
) -> dict:
    """Train one run and return its manifest (also written to ``out_dir/run.json``).

    ``train_data``: RL rows ``{"prompt": str, <other columns passed to reward_fn>}``;
    SFT rows ``{"prompt": str, "completion": str}``. ``reward_fn(prompts, completions, **columns)``
    returns one float per completion (RL only). ``mask_file``: precomputed masks (``.npz``)
    to use instead of computing them from the base. ``base_checkpoint``: the config's id of
    the base, recorded as the manifest's ``reference_base``.
    """
    from transformers import set_seed

    spec = spec.resolved()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    _check_train_data(spec, train_data, reward_fn)
    work_dir = out_dir / ".trainer"
    t_start = time.perf_counter()
    with _cpu_session(threads):
        _clear_outputs(out_dir)
        try:
            set_seed(spec.seed)
            tokenizer, model, kl_base = _load_policy(spec, base_dir)
            masks = _apply_masks(spec, model, out_dir, mask_file)
            model = _apply_adapter(spec, model)
            common = _common_args(spec, work_dir)
            if spec.is_rl:
                trainer = _rl_trainer(spec, model, tokenizer, train_data, reward_fn, common)
            else:
                trainer = _sft_trainer(spec, model, tokenizer, train_data, common)
            trainer._spec = spec
            trainer._kl_base = kl_base
            enforcer, step_logger, saved = _attach_callbacks(trainer, spec, masks, tokenizer, base_dir, out_dir)

            t_train = time.perf_counter()
            trainer.train()
            train_seconds = time.perf_counter() - t_train
            step_logger.close()
            final_step = trainer.state.global_step // spec.updates_per_step
            if final_step != spec.steps:
                raise RuntimeError(f"training stopped after {final_step} of {spec.steps} steps")
            save_policy(
                trainer.model,
                tokenizer,
                out_dir / FINAL,
                dtype=_DTYPES[spec.save_dtype],
                info=_checkpoint_info(spec, base_dir, final_step),
            )
            os.replace(step_logger.path, out_dir / METRICS_FILE)
            timing = {
                "train_seconds": train_seconds,
                "seconds_per_step": train_seconds / max(final_step, 1),
                "total_seconds": time.perf_counter() - t_start,
                "threads": threads,
            }
            manifest = _manifest(spec, base_dir, base_checkpoint, trainer, saved, step_logger, enforcer, masks, timing)
            write_manifest(out_dir, manifest)
            return manifest
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
