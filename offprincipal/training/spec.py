"""One run specification for both training backends (TRL on one machine, verl on clusters).

:class:`RunSpec` fixes everything that defines a training run: algorithm, optimizer, batch
geometry, clipping, loss aggregation, KL handling, DAPO's overlong shaping, the checkpoint
schedule, the sparse-update mask and the adapter. The single-machine backend
(:mod:`offprincipal.training.trl_backend`) reads it directly; :func:`to_verl_overrides`
turns it into Hydra overrides for ``python -m verl.trainer.main_ppo`` (verl 0.9.1), using
only keys documented in ``shared/reference/verl.md`` (kept here as :data:`VERL_DOCUMENTED_KEYS`).

Algorithm defaults (``None`` fields are resolved by :meth:`RunSpec.resolved`):

==========================  ===============  ========================
field                       dapo             grpo
==========================  ===============  ========================
``clip_ratio_low/high``     0.2 / 0.28       0.2 / 0.2
``loss_agg_mode``           token-mean       seq-mean-token-mean
``overlong_buffer``         on               off
==========================  ===============  ========================

Steps count *training steps* (one rollout batch of ``prompts_per_step × group_size``
completions each, followed by ``prompts_per_step / mini_batch_prompts × ppo_epochs``
optimizer updates) -- verl's ``global_steps``. For SFT a step is one optimizer update on
``sft_batch_size`` examples.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

ALGORITHMS = ("dapo", "grpo", "sft")
RL_ALGORITHMS = ("dapo", "grpo")
MASK_KINDS = ("none", "principal", "nonprincipal", "low", "safe", "random")
ADAPTERS = ("none", "lora", "pissa")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean")
LR_SCHEDULERS = ("constant",)
SAVE_DTYPES = ("bfloat16", "float32")
#: the projections that masks and adapters act on (HF module names of a Qwen/Llama decoder)
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: AdamW's epsilon in verl (``torch.optim.AdamW`` default); verl.md documents no key for it
VERL_ADAMW_EPS = 1e-8

_ALGO_DEFAULTS = {
    "dapo": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "loss_agg_mode": "token-mean", "overlong_buffer": True},
    "grpo": {
        "clip_ratio_low": 0.2,
        "clip_ratio_high": 0.2,
        "loss_agg_mode": "seq-mean-token-mean",
        "overlong_buffer": False,
    },
}


class SpecError(ValueError):
    """An invalid run specification; the message names the offending field."""

    def __init__(self, field_name: str, problem: str):
        self.field = field_name
        super().__init__(f"RunSpec.{field_name}: {problem}")


@dataclass(frozen=True)
class RunSpec:
    # ---- what and how long
    algorithm: str = "dapo"
    seed: int = 0
    steps: int = 10
    #: training steps after which a checkpoint ``step_{N}`` is saved (0 = the initial policy);
    #: the last step is always saved as ``final``
    save_steps: tuple[int, ...] = ()

    # ---- optimizer (AdamW, one parameter group, decay on every trainable tensor, as verl)
    lr: float = 1e-6
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = VERL_ADAMW_EPS
    weight_decay: float = 0.01  # verl's default (the paper lists none)
    max_grad_norm: float = 1.0  # verl's actor.optim.clip_grad

    # ---- RL batch geometry
    prompts_per_step: int = 8  # data.train_batch_size
    group_size: int = 4  # rollout.n
    mini_batch_prompts: int | None = None  # ppo_mini_batch_size (None: = prompts_per_step, one update/step)
    ppo_epochs: int = 1

    # ---- RL objective
    clip_ratio_low: float | None = None
    clip_ratio_high: float | None = None
    clip_ratio_c: float = 10.0  # dual clip (verl); inert with one update per rollout (ratio ≡ 1)
    loss_agg_mode: str | None = None
    norm_adv_by_std: bool = True  # GRPO advantage (r - mean) / std within the group
    entropy_coeff: float = 0.0
    kl_in_loss: bool = False
    kl_coef: float = 0.0  # the paper's beta = 0
    #: log the token-wise KL to the base policy every step (never enters the loss when kl_in_loss is False)
    log_kl: bool = True

    # ---- rollout
    max_prompt_length: int = 16
    max_response_length: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: disabled

    # ---- reward shaping (DAPO): overlong buffer, dynamic sampling
    overlong_buffer: bool | None = None
    overlong_buffer_len: int | None = None  # None: max(1, max_response_length // 4)
    overlong_penalty_factor: float = 1.0
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal (DAPO filter_groups)

    # ---- precision
    master_dtype: str = "float32"
    save_dtype: str = "bfloat16"

    # ---- sparse update mask (trainable entries; see offprincipal.training.masks)
    mask: str = "none"
    mask_alpha: float = 0.5
    mask_rank_k: int = 128
    mask_seed: int = 0

    # ---- adapters
    adapter: str = "none"
    adapter_rank: int = 8
    adapter_alpha: float = 16.0
    adapter_dropout: float = 0.0
    adapter_target_modules: tuple[str, ...] = TARGET_MODULES

    # ---- SFT
    sft_batch_size: int = 8
    sft_max_length: int = 32
    sft_completion_only_loss: bool = True

    def __post_init__(self):
        for key in ("save_steps", "betas", "adapter_target_modules"):
            val = getattr(self, key)
            if isinstance(val, list):
                object.__setattr__(self, key, tuple(val))
        self.validate()

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        if not isinstance(data, dict):
            raise SpecError("<root>", f"expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(unknown[0], f"unknown field (known: {', '.join(sorted(names))})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, val in out.items():
            if isinstance(val, tuple):
                out[key] = list(val)
        return out

    def replace(self, **changes) -> RunSpec:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ derived values
    @property
    def is_rl(self) -> bool:
        return self.algorithm in RL_ALGORITHMS

    def resolved(self) -> RunSpec:
        """A copy with every ``None`` default filled in from the algorithm."""
        if not self.is_rl:
            return self
        d = _ALGO_DEFAULTS[self.algorithm]
        changes = {k: v for k, v in d.items() if getattr(self, k) is None}
        if self.mini_batch_prompts is None:
            changes["mini_batch_prompts"] = self.prompts_per_step
        if self.overlong_buffer_len is None:
            changes["overlong_buffer_len"] = max(1, self.max_response_length // 4)
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def updates_per_step(self) -> int:
        """Optimizer updates per training step."""
        if not self.is_rl:
            return 1
        mini = self.mini_batch_prompts or self.prompts_per_step
        return (self.prompts_per_step // mini) * self.ppo_epochs

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def need(cond: bool, name: str, problem: str) -> None:
            if not cond:
                raise SpecError(name, problem)

        def is_int(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        def is_num(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        need(self.algorithm in ALGORITHMS, "algorithm", f"must be one of {ALGORITHMS}, got {self.algorithm!r}")
        need(is_int(self.seed) and self.seed >= 0, "seed", f"must be a non-negative integer, got {self.seed!r}")
        need(is_int(self.steps) and self.steps >= 1, "steps", f"must be an integer >= 1, got {self.steps!r}")
        need(
            isinstance(self.save_steps, (tuple, list)) and all(is_int(s) for s in self.save_steps),
            "save_steps",
            f"must be a list of integers, got {self.save_steps!r}",
        )
        bad = [s for s in self.save_steps if not 0 <= s <= self.steps]
        need(not bad, "save_steps", f"every step must lie in [0, steps={self.steps}], got {bad}")
        need(len(set(self.save_steps)) == len(self.save_steps), "save_steps", "contains duplicates")

        need(is_num(self.lr) and self.lr > 0, "lr", f"must be a positive number, got {self.lr!r}")
        need(self.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"must be one of {LR_SCHEDULERS}")
        need(is_int(self.lr_warmup_steps) and self.lr_warmup_steps >= 0, "lr_warmup_steps", "must be an integer >= 0")
        need(
            isinstance(self.betas, (tuple, list))
            and len(self.betas) == 2
            and all(is_num(b) and 0 <= b < 1 for b in self.betas),
            "betas",
            f"must be two numbers in [0, 1), got {self.betas!r}",
        )
        need(is_num(self.eps) and self.eps > 0, "eps", f"must be a positive number, got {self.eps!r}")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "must be a number >= 0")
        need(is_num(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0: no clipping)")

        for name in ("prompts_per_step", "group_size", "ppo_epochs", "max_prompt_length", "max_response_length"):
            val = getattr(self, name)
            need(is_int(val) and val >= 1, name, f"must be an integer >= 1, got {val!r}")
        if self.is_rl:
            need(self.group_size >= 2, "group_size", "GRPO/DAPO need at least 2 rollouts per prompt (group baseline)")
        if self.mini_batch_prompts is not None:
            need(is_int(self.mini_batch_prompts) and self.mini_batch_prompts >= 1, "mini_batch_prompts", "must be >= 1")
            need(
                self.prompts_per_step % self.mini_batch_prompts == 0,
                "mini_batch_prompts",
                f"must divide prompts_per_step={self.prompts_per_step}, got {self.mini_batch_prompts}",
            )
        for name in ("clip_ratio_low", "clip_ratio_high"):
            val = getattr(self, name)
            need(val is None or (is_num(val) and 0 < val < 1), name, f"must lie in (0, 1), got {val!r}")
        need(is_num(self.clip_ratio_c) and self.clip_ratio_c > 1, "clip_ratio_c", "must be > 1")
        need(
            self.loss_agg_mode is None or self.loss_agg_mode in LOSS_AGG_MODES,
            "loss_agg_mode",
            f"must be one of {LOSS_AGG_MODES} (the TRL backend has no seq-mean-token-sum), got {self.loss_agg_mode!r}",
        )
        need(isinstance(self.norm_adv_by_std, bool), "norm_adv_by_std", "must be a boolean")
        need(is_num(self.entropy_coeff) and self.entropy_coeff >= 0, "entropy_coeff", "must be >= 0")
        need(isinstance(self.kl_in_loss, bool), "kl_in_loss", "must be a boolean")
        need(is_num(self.kl_coef) and self.kl_coef >= 0, "kl_coef", "must be a number >= 0")
        need(
            self.kl_in_loss or self.kl_coef == 0,
            "kl_coef",
            f"is {self.kl_coef} but kl_in_loss is False; the paper's setting is kl_in_loss=False, kl_coef=0",
        )
        need(isinstance(self.log_kl, bool), "log_kl", "must be a boolean")
        need(is_num(self.temperature) and self.temperature > 0, "temperature", "must be > 0")
        need(is_num(self.top_p) and 0 < self.top_p <= 1, "top_p", "must lie in (0, 1]")
        need(is_int(self.top_k) and (self.top_k == -1 or self.top_k >= 1), "top_k", "must be -1 (off) or >= 1")

        need(
            self.overlong_buffer is None or isinstance(self.overlong_buffer, bool),
            "overlong_buffer",
            "must be a boolean",
        )
        if self.overlong_buffer_len is not None:
            need(
                is_int(self.overlong_buffer_len) and 1 <= self.overlong_buffer_len <= self.max_response_length,
                "overlong_buffer_len",
                f"must be an integer in [1, max_response_length={self.max_response_length}], got {self.overlong_buffer_len!r}",
            )
        need(
            is_num(self.overlong_penalty_factor) and self.overlong_penalty_factor >= 0,
            "overlong_penalty_factor",
            "must be >= 0",
        )
        need(isinstance(self.dynamic_sampling, bool), "dynamic_sampling", "must be a boolean")
        if not self.is_rl:
            need(not self.dynamic_sampling, "dynamic_sampling", "applies to RL algorithms only")
            need(not self.overlong_buffer, "overlong_buffer", "applies to RL algorithms only")

        need(self.master_dtype == "float32", "master_dtype", "only fp32 master weights are supported")
        need(self.save_dtype in SAVE_DTYPES, "save_dtype", f"must be one of {SAVE_DTYPES}")

        need(self.mask in MASK_KINDS, "mask", f"must be one of {MASK_KINDS}, got {self.mask!r}")
        need(is_num(self.mask_alpha) and 0 < self.mask_alpha <= 1, "mask_alpha", "must lie in (0, 1]")
        need(is_int(self.mask_rank_k) and self.mask_rank_k >= 1, "mask_rank_k", "must be an integer >= 1")
        need(is_int(self.mask_seed) and self.mask_seed >= 0, "mask_seed", "must be a non-negative integer")

        need(self.adapter in ADAPTERS, "adapter", f"must be one of {ADAPTERS}, got {self.adapter!r}")
        need(
            self.adapter == "none" or self.mask == "none",
            "mask",
            "masks act on full weights and cannot be combined with an adapter",
        )
        need(is_int(self.adapter_rank) and self.adapter_rank >= 1, "adapter_rank", "must be an integer >= 1")
        need(is_num(self.adapter_alpha) and self.adapter_alpha > 0, "adapter_alpha", "must be > 0")
        need(is_num(self.adapter_dropout) and 0 <= self.adapter_dropout < 1, "adapter_dropout", "must lie in [0, 1)")
        need(
            isinstance(self.adapter_target_modules, (tuple, list))
            and len(self.adapter_target_modules) > 0
            and all(isinstance(m, str) and m for m in self.adapter_target_modules),
            "adapter_target_modules",
            "must be a non-empty list of module names",
        )
        for name in ("sft_batch_size", "sft_max_length"):
            val = getattr(self, name)
            need(is_int(val) and val >= 1, name, f"must be an integer >= 1, got {val!r}")
        need(isinstance(self.sft_completion_only_loss, bool), "sft_completion_only_loss", "must be a boolean")


# ---------------------------------------------------------------------------- verl mapping

#: Every verl 0.9.1 key this module may emit, each documented in shared/reference/verl.md
#: (§1.3 exact keys, §1.4 example, §2 reward, §4.1-4.4 plugin/LoRA/PiSSA, §7 logging). A
#: leading "+" (key not in verl's schema) is part of the documented spelling.
VERL_DOCUMENTED_KEYS = (
    "algorithm.adv_estimator",
    "algorithm.norm_adv_by_std_in_grpo",
    "algorithm.use_kl_in_reward",
    "algorithm.kl_ctrl.kl_coef",
    "algorithm.filter_groups.enable",
    "data.train_batch_size",
    "data.max_prompt_length",
    "data.max_response_length",
    "data.train_files",
    "data.val_files",
    "data.prompt_key",
    "data.truncation",
    "data.filter_overlong_prompts",
    "actor_rollout_ref.model.path",
    "actor_rollout_ref.model.use_remove_padding",
    "actor_rollout_ref.model.enable_gradient_checkpointing",
    "actor_rollout_ref.rollout.n",
    "actor_rollout_ref.rollout.temperature",
    "actor_rollout_ref.rollout.top_p",
    "actor_rollout_ref.rollout.top_k",
    "actor_rollout_ref.rollout.load_format",
    "actor_rollout_ref.rollout.name",
    "actor_rollout_ref.rollout.tensor_model_parallel_size",
    "actor_rollout_ref.rollout.gpu_memory_utilization",
    "actor_rollout_ref.rollout.enable_chunked_prefill",
    "actor_rollout_ref.rollout.max_num_batched_tokens",
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz",
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.actor.strategy",
    "actor_rollout_ref.ref.strategy",
    "actor_rollout_ref.actor.ppo_mini_batch_size",
    "actor_rollout_ref.actor.ppo_epochs",
    "actor_rollout_ref.actor.use_dynamic_bsz",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
    "actor_rollout_ref.actor.ulysses_sequence_parallel_size",
    "actor_rollout_ref.actor.clip_ratio_low",
    "actor_rollout_ref.actor.clip_ratio_high",
    "actor_rollout_ref.actor.clip_ratio_c",
    "actor_rollout_ref.actor.loss_agg_mode",
    "actor_rollout_ref.actor.entropy_coeff",
    "actor_rollout_ref.actor.use_kl_loss",
    "actor_rollout_ref.actor.kl_loss_coef",
    "actor_rollout_ref.actor.kl_loss_type",
    "actor_rollout_ref.actor.checkpoint.save_contents",
    "actor_rollout_ref.actor.optim.lr",
    "actor_rollout_ref.actor.optim.lr_scheduler_type",
    "actor_rollout_ref.actor.optim.lr_warmup_steps",
    "actor_rollout_ref.actor.optim.betas",
    "actor_rollout_ref.actor.optim.weight_decay",
    "actor_rollout_ref.actor.optim.clip_grad",
    "actor_rollout_ref.ref.log_prob_use_dynamic_bsz",
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.model.external_lib",
    "actor_rollout_ref.model.lora_rank",
    "actor_rollout_ref.model.lora_alpha",
    "actor_rollout_ref.model.target_modules",
    "actor_rollout_ref.model.lora_adapter_path",
    "reward.reward_manager.name",
    "reward.custom_reward_function.path",
    "reward.custom_reward_function.name",
    "+reward.reward_kwargs.overlong_buffer_cfg.enable",
    "+reward.reward_kwargs.overlong_buffer_cfg.len",
    "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor",
    "+reward.reward_kwargs.overlong_buffer_cfg.log",
    "+reward.reward_kwargs.max_resp_len",
    "+ray_kwargs.ray_init.runtime_env.env_vars.PNT_MASK_PATH",
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH",
    "trainer.logger",
    "trainer.project_name",
    "trainer.experiment_name",
    "trainer.nnodes",
    "trainer.n_gpus_per_node",
    "trainer.total_training_steps",
    "trainer.total_epochs",
    "trainer.save_freq",
    "trainer.test_freq",
    "trainer.val_before_train",
    "trainer.default_local_dir",
    "trainer.resume_mode",
)

#: Keys verl.md does not document, each checked against verl 0.9.1's own composed config by
#: tests/verl (a key that is not there fails Hydra composition), with why they are needed.
VERL_CHECKED_KEYS = {
    "data.seed": "the data loader's shuffle seed (spec.seed), so independent runs differ by seed",
    "data.val_max_samples": "validation is off (test_freq=-1) but verl still builds the val dataset: keep it tiny",
    "actor_rollout_ref.rollout.seed": "vLLM's sampling seed (spec.seed)",
    "actor_rollout_ref.ref.ulysses_sequence_parallel_size": "the reference model's sequence parallelism, as the actor's",
    "+ray_kwargs.ray_init.runtime_env.env_vars.PNT_MASK_REPORT_DIR": "where the mask plugin records, per rank, that it is active",
}

#: RunSpec fields with no verl key, and where they go instead (docs/training.md repeats this)
VERL_UNMAPPED_FIELDS = {
    "seed": "data.seed and actor_rollout_ref.rollout.seed (launch overrides; see VERL_CHECKED_KEYS)",
    "save_steps": "verl saves every trainer.save_freq steps and on the last step; save_freq = gcd(save_steps)",
    "eps": "no documented key; verl's AdamW uses torch's default 1e-8 (other values are refused)",
    "lr_scheduler": "mapped to optim.lr_scheduler_type",
    "log_kl": "verl.md §7 option A: use_kl_loss=True with kl_loss_coef=0.0, kl_loss_type=low_var_kl",
    "dynamic_sampling": "algorithm.filter_groups.enable (v1 replay buffer refills; the TRL backend drops without refill)",
    "master_dtype": "verl trains fp32 master weights by default (fsdp_config.model_dtype: fp32)",
    "save_dtype": "the workflow merges each saved step to bf16 (verl.model_merger; adapters by our own fold)",
    "mask, mask_alpha, mask_rank_k, mask_seed": "no verl key: the MaskedFSDPEngine plugin "
    "(offprincipal.training.verl_mask_plugin) loaded via actor_rollout_ref.model.external_lib, mask file via "
    "env var PNT_MASK_PATH; needs actor.strategy=fsdp2",
    "adapter=pissa": "no verl key: PiSSA is initialised offline with PEFT (offprincipal.training.pissa); model.path "
    "points at the residual model and model.lora_adapter_path at pissa_init",
    "adapter_dropout": "no documented key (verl builds LoraConfig without dropout); only 0 is accepted",
    "sft_*": "verl.md documents only the PPO trainer; SFT specs have no verl mapping",
}

#: the module verl imports into every worker for masked runs (actor_rollout_ref.model.external_lib)
MASK_PLUGIN = "offprincipal.training.verl_mask_plugin"


@dataclass(frozen=True)
class VerlLaunch:
    """Everything a verl command needs besides the run specification: paths and resources.

    The paths are absolute (Ray actors run in other working directories). ``n_gpus_per_node``,
    ``nnodes`` and the rollout settings come from the caller (the run's ``verl`` config block
    now, the cluster profile later)."""

    model_path: str
    train_files: tuple[str, ...]
    reward_path: str
    output_dir: str  # trainer.default_local_dir: FSDP shards, resumed from with resume_mode=auto
    metrics_path: str  # VERL_FILE_LOGGER_PATH: one JSONL per attempt (verl's file logger truncates)
    experiment_name: str
    project_name: str = "offprincipal"
    reward_name: str = "compute_score"
    val_files: tuple[str, ...] | None = None  # None: the train files (validation is off anyway)
    nnodes: int = 1
    n_gpus_per_node: int = 8
    rollout_tensor_parallel: int = 1
    gpu_memory_utilization: float = 0.7
    sequence_parallel: int = 1
    mask_report_dir: str | None = None

    def __post_init__(self):
        for key in ("train_files", "val_files"):
            val = getattr(self, key)
            if isinstance(val, (str, os.PathLike)):
                object.__setattr__(self, key, (str(val),))
            elif isinstance(val, list):
                object.__setattr__(self, key, tuple(str(v) for v in val))
        for key in ("nnodes", "n_gpus_per_node", "rollout_tensor_parallel", "sequence_parallel"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"VerlLaunch.{key}: must be an integer >= 1, got {val!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"VerlLaunch.gpu_memory_utilization: must lie in (0, 1], got {self.gpu_memory_utilization}")
        for key in ("model_path", "reward_path", "output_dir", "metrics_path", *(["mask_report_dir"] if self.mask_report_dir else [])):
            if not os.path.isabs(getattr(self, key)):
                raise ValueError(f"VerlLaunch.{key}: must be an absolute path (Ray workers run elsewhere), got {getattr(self, key)!r}")


def check_verl_spec(spec: RunSpec) -> RunSpec:
    """Refuse what verl 0.9.1 cannot run as specified; returns the resolved spec."""
    spec = spec.resolved()
    if not spec.is_rl:
        raise SpecError("algorithm", "verl.md documents only the PPO trainer; an SFT spec has no verl mapping")
    if spec.eps != VERL_ADAMW_EPS:
        raise SpecError("eps", f"verl.md documents no AdamW eps key (verl uses {VERL_ADAMW_EPS}); got {spec.eps}")
    if 0 in spec.save_steps:
        raise SpecError("save_steps", "verl saves no step 0; the base checkpoint is the step-0 policy")
    if spec.adapter != "none":
        if spec.adapter_dropout:
            raise SpecError("adapter_dropout", "verl builds its LoraConfig without dropout; use 0")
        if float(spec.adapter_alpha) != int(spec.adapter_alpha):
            raise SpecError("adapter_alpha", f"verl records lora_alpha as an integer (lora_train_meta.json); got {spec.adapter_alpha}")
    return spec


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:+\-]+")


def _path_value(path: str) -> str:
    """A path as a Hydra override value: bare when it is plain, else single-quoted."""
    path = str(path)
    if _PLAIN_VALUE.fullmatch(path):
        return path
    if "'" in path or "\\" in path:
        raise ValueError(f"path {path!r} contains a quote or backslash, which Hydra overrides cannot carry")
    return f"'{path}'"


class _Quoted(str):
    """A string value already formatted for a Hydra override."""


def to_verl_overrides(
    spec: RunSpec,
    *,
    launch: VerlLaunch | None = None,
    mask_plugin: str | None = None,
    mask_path: str | None = None,
    pissa_adapter_path: str | None = None,
) -> list[str]:
    """Hydra overrides (``key=value``) for ``python -m verl.trainer.main_ppo`` (verl 0.9.1).

    Without ``launch`` only spec-determined keys are emitted. With it, the command is
    complete: model, data, reward function, output directory, logger, resources. Masked runs
    need ``mask_plugin`` (:data:`MASK_PLUGIN`) and ``mask_path``; PiSSA runs need
    ``pissa_adapter_path`` (the offline ``pissa_init`` adapter, verl.md §4.4) -- without them
    a masked or PiSSA spec is refused rather than silently run as a dense one.
    """
    spec = check_verl_spec(spec)
    a, o = "actor_rollout_ref.actor.", "actor_rollout_ref.actor.optim."
    kv: list[tuple[str, object]] = [
        ("algorithm.adv_estimator", "grpo"),
        ("algorithm.norm_adv_by_std_in_grpo", spec.norm_adv_by_std),
        ("algorithm.use_kl_in_reward", False),
        ("algorithm.kl_ctrl.kl_coef", 0.0),
        ("algorithm.filter_groups.enable", spec.dynamic_sampling),
    ]
    kv += [
        ("data.train_batch_size", spec.prompts_per_step),
        ("data.max_prompt_length", spec.max_prompt_length),
        ("data.max_response_length", spec.max_response_length),
        ("actor_rollout_ref.rollout.n", spec.group_size),
        ("actor_rollout_ref.rollout.temperature", float(spec.temperature)),
        ("actor_rollout_ref.rollout.top_p", float(spec.top_p)),
        ("actor_rollout_ref.rollout.top_k", spec.top_k),
        (a + "ppo_mini_batch_size", spec.mini_batch_prompts),
        (a + "ppo_epochs", spec.ppo_epochs),
        (a + "clip_ratio_low", float(spec.clip_ratio_low)),
        (a + "clip_ratio_high", float(spec.clip_ratio_high)),
        (a + "clip_ratio_c", float(spec.clip_ratio_c)),
        (a + "loss_agg_mode", spec.loss_agg_mode),
        (a + "entropy_coeff", float(spec.entropy_coeff)),
    ]
    if spec.kl_in_loss:
        kv += [(a + "use_kl_loss", True), (a + "kl_loss_coef", float(spec.kl_coef)), (a + "kl_loss_type", "low_var_kl")]
    elif spec.log_kl:  # verl.md §7 option A: the reference is built and KL logged, 0 x KL in the loss
        kv += [(a + "use_kl_loss", True), (a + "kl_loss_coef", 0.0), (a + "kl_loss_type", "low_var_kl")]
    else:
        kv += [(a + "use_kl_loss", False), (a + "kl_loss_coef", 0.0)]
    kv += [
        (o + "lr", float(spec.lr)),
        (o + "lr_scheduler_type", spec.lr_scheduler),
        (o + "lr_warmup_steps", spec.lr_warmup_steps),
        (o + "betas", [float(b) for b in spec.betas]),
        (o + "weight_decay", float(spec.weight_decay)),
        (o + "clip_grad", float(spec.max_grad_norm)),
    ]
    if spec.overlong_buffer:
        kv += [
            ("reward.reward_manager.name", "dapo"),
            ("+reward.reward_kwargs.overlong_buffer_cfg.enable", True),
            ("+reward.reward_kwargs.overlong_buffer_cfg.len", spec.overlong_buffer_len),
            ("+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor", float(spec.overlong_penalty_factor)),
            ("+reward.reward_kwargs.overlong_buffer_cfg.log", True),
            ("+reward.reward_kwargs.max_resp_len", spec.max_response_length),
        ]
    elif spec.algorithm == "dapo":
        kv.append(("reward.reward_manager.name", "dapo"))
    kv.append(("trainer.total_training_steps", spec.steps))
    saves = [s for s in spec.save_steps if s > 0]
    kv.append(("trainer.save_freq", reduce(math.gcd, saves) if saves else spec.steps))

    if spec.mask != "none":
        if not mask_plugin or not mask_path:
            raise SpecError(
                "mask",
                f"mask={spec.mask!r} has no verl key: pass mask_plugin (module with the MaskedFSDPEngine, "
                "verl.md §4.2) and mask_path",
            )
        kv += [
            (a + "strategy", "fsdp2"),
            ("actor_rollout_ref.model.external_lib", mask_plugin),
            ("+ray_kwargs.ray_init.runtime_env.env_vars.PNT_MASK_PATH", _Quoted(_path_value(mask_path))),
        ]
    if spec.adapter != "none":
        kv += [
            ("actor_rollout_ref.model.lora_rank", spec.adapter_rank),
            ("actor_rollout_ref.model.lora_alpha", float(spec.adapter_alpha)),
            ("actor_rollout_ref.model.target_modules", list(spec.adapter_target_modules)),
            ("actor_rollout_ref.rollout.load_format", "safetensors"),
        ]
        if spec.adapter == "pissa":
            if not pissa_adapter_path:
                raise SpecError(
                    "adapter",
                    "PiSSA has no verl switch: initialise it offline (verl.md §4.4) and pass pissa_adapter_path",
                )
            kv.append(("actor_rollout_ref.model.lora_adapter_path", _Quoted(_path_value(pissa_adapter_path))))
    if launch is not None:
        kv += _launch_overrides(spec, launch, masked=spec.mask != "none")
    out: dict[str, str] = {}
    for k, v in kv:  # Hydra refuses a key given twice: keep one, and never two different values
        text = v if isinstance(v, _Quoted) else _fmt(v)
        if out.setdefault(k, text) != text:
            raise AssertionError(f"override {k} emitted with two values: {out[k]!r} and {text!r}")
    return [f"{k}={v}" for k, v in out.items()]


def _launch_overrides(spec: RunSpec, launch: VerlLaunch, *, masked: bool) -> list[tuple[str, object]]:
    """Model, data, reward function, output, logger and resources of one verl command."""
    a, ref, r = "actor_rollout_ref.actor.", "actor_rollout_ref.ref.", "actor_rollout_ref.rollout."
    env = "+ray_kwargs.ray_init.runtime_env.env_vars."
    seq = spec.max_prompt_length + spec.max_response_length

    def paths(values) -> _Quoted:
        return _Quoted("[" + ",".join(_path_value(v) for v in values) + "]")

    kv: list[tuple[str, object]] = [
        ("actor_rollout_ref.model.path", _Quoted(_path_value(launch.model_path))),
        ("actor_rollout_ref.model.use_remove_padding", True),
        ("actor_rollout_ref.model.enable_gradient_checkpointing", True),
        ("data.train_files", paths(launch.train_files)),
        ("data.val_files", paths(launch.val_files or launch.train_files)),
        ("data.val_max_samples", 8),
        ("data.prompt_key", "prompt"),
        # prompts over the budget are dropped when the dataset loads; none is cut silently
        ("data.filter_overlong_prompts", True),
        ("data.truncation", "error"),
        ("data.seed", spec.seed),
        (a + "strategy", "fsdp2"),  # FSDP2 keeps HF parameter names (masks, adapters)
        (ref + "strategy", "fsdp2"),
        (a + "use_dynamic_bsz", True),
        (a + "ppo_max_token_len_per_gpu", 2 * seq),
        (a + "checkpoint.save_contents", ["model", "optimizer", "extra"]),
        (ref + "log_prob_use_dynamic_bsz", True),
        (ref + "log_prob_max_token_len_per_gpu", 4 * seq),
        (r + "name", "vllm"),
        (r + "tensor_model_parallel_size", launch.rollout_tensor_parallel),
        (r + "gpu_memory_utilization", float(launch.gpu_memory_utilization)),
        (r + "enable_chunked_prefill", True),
        (r + "max_num_batched_tokens", seq),
        (r + "log_prob_use_dynamic_bsz", True),
        (r + "log_prob_max_token_len_per_gpu", 4 * seq),
        (r + "seed", spec.seed),
        ("reward.custom_reward_function.path", _Quoted(_path_value(launch.reward_path))),
        ("reward.custom_reward_function.name", launch.reward_name),
        ("trainer.logger", ["console", "file"]),
        ("trainer.project_name", launch.project_name),
        ("trainer.experiment_name", launch.experiment_name),
        ("trainer.nnodes", launch.nnodes),
        ("trainer.n_gpus_per_node", launch.n_gpus_per_node),
        ("trainer.total_epochs", 1000),  # the step budget ends training; the v1 loop re-iterates data
        ("trainer.test_freq", -1),  # held-out evaluation is the evaluation stage's job
        ("trainer.val_before_train", False),
        ("trainer.default_local_dir", _Quoted(_path_value(launch.output_dir))),
        ("trainer.resume_mode", "auto"),
        (env + "VERL_FILE_LOGGER_PATH", _Quoted(_path_value(launch.metrics_path))),
    ]
    if launch.sequence_parallel > 1:
        kv += [
            (a + "ulysses_sequence_parallel_size", launch.sequence_parallel),
            (ref + "ulysses_sequence_parallel_size", launch.sequence_parallel),
        ]
    if masked:
        if not launch.mask_report_dir:
            raise SpecError("mask", "a masked verl run needs launch.mask_report_dir (the plugin's activation records)")
        kv.append((env + "PNT_MASK_REPORT_DIR", _Quoted(_path_value(launch.mask_report_dir))))
    return kv


def verl_command(overrides: list[str], python: str = "python") -> list[str]:
    """``python -m verl.trainer.main_ppo <overrides>``."""
    return [python, "-m", "verl.trainer.main_ppo", *overrides]


def override_key(override: str) -> str:
    """The key of a ``key=value`` override (with its leading ``+`` if any)."""
    return override.split("=", 1)[0]
