"""Every verl run of config/paper.yaml, as the workflow would launch it, through verl 0.9.1's
own Hydra composition (``verl/trainer/config/ppo_trainer.yaml``) and ``validate_config``.

LoRA/PiSSA runs: ``validate_config`` imports vLLM's LoRA utilities when ``lora_rank > 0`` and
fails without vLLM (verl.md §4.3), so they are validated with ``model.lora.merge=True`` added
(verl's merge-before-sync path, which skips that import); the launched command does not carry it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from offprincipal.config import load
from offprincipal.training.run_directory import reference_base  # noqa: F401  (import check: no verl needed)
from offprincipal.training.spec import (
    VERL_CHECKED_KEYS,
    VERL_DOCUMENTED_KEYS,
    RunSpec,
    override_key,
)
from offprincipal.training.verl_backend import build_overrides

REPO = Path(__file__).resolve().parents[2]
PAPER = load(REPO / "config" / "paper.yaml")
VERL_RUNS = {rid: run for rid, run in PAPER["runs"].items() if run["backend"] == "verl"}
ROOT = Path("/cluster/results/paper")


def overrides_of(rid: str, run: dict) -> list[str]:
    spec = RunSpec.from_dict(run["spec"])
    return build_overrides(
        spec,
        model_path=ROOT / "pissa" / rid if spec.adapter == "pissa" else ROOT / "hub" / run["base"],
        train_files=[str(ROOT / "datasets" / run["data"] / "train.parquet")],
        state_dir=ROOT / "train_state" / rid,
        experiment_name=rid,
        attempt="attempt_001",
        resources=run.get("verl", {}),
        mask_path=ROOT / "training_masks" / f"{rid}.npz" if spec.mask != "none" else None,
        pissa_adapter_path=ROOT / "pissa" / rid / "pissa_init" if spec.adapter == "pissa" else None,
    )[0]


def composed(overrides: list[str]):
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=overrides)


def test_paper_config_has_the_runs_of_app_c1():
    kinds = {(RunSpec.from_dict(r["spec"]).mask, RunSpec.from_dict(r["spec"]).adapter) for r in VERL_RUNS.values()}
    assert {("principal", "none"), ("nonprincipal", "none"), ("low", "none"), ("safe", "none"), ("random", "none"),
            ("none", "none"), ("none", "lora"), ("none", "pissa")} <= kinds
    assert len(VERL_RUNS) == 35


@pytest.mark.parametrize("rid", sorted(VERL_RUNS))
def test_composes_and_validates(rid):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    run = VERL_RUNS[rid]
    spec = RunSpec.from_dict(run["spec"]).resolved()
    overrides = overrides_of(rid, run)
    keys = {override_key(o) for o in overrides}
    assert keys <= set(VERL_DOCUMENTED_KEYS) | set(VERL_CHECKED_KEYS), sorted(keys - set(VERL_DOCUMENTED_KEYS) - set(VERL_CHECKED_KEYS))
    if spec.adapter != "none":
        overrides = [*overrides, "actor_rollout_ref.model.lora.merge=True"]
    cfg = composed(overrides)
    auto_set_device(cfg)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))

    a, r = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert cfg.data.train_batch_size == spec.prompts_per_step and a.ppo_mini_batch_size == spec.mini_batch_prompts
    assert r.n == spec.group_size and cfg.data.max_response_length == spec.max_response_length
    assert a.optim.lr == spec.lr and a.optim.weight_decay == spec.weight_decay and list(a.optim.betas) == list(spec.betas)
    assert (a.clip_ratio_low, a.clip_ratio_high, a.loss_agg_mode) == (0.2, 0.28, "token-mean")
    # KL logged (a reference is built), never in the loss or the reward
    assert a.use_kl_loss and a.kl_loss_coef == 0.0 and not cfg.algorithm.use_kl_in_reward
    assert need_reference_policy(cfg) and not need_critic(cfg)
    # the new reward keys, which main_ppo reads (the legacy ones are silently ignored)
    assert cfg.reward.reward_manager.name == "dapo"
    kw = cfg.reward.reward_kwargs
    assert kw.overlong_buffer_cfg.enable and kw.overlong_buffer_cfg.len == 1024 and kw.max_resp_len == spec.max_response_length
    assert cfg.reward.custom_reward_function.path.endswith("offprincipal/training/verl_reward.py")
    assert list(cfg.trainer.logger) == ["console", "file"] and cfg.trainer.resume_mode == "auto"
    env = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env.VERL_FILE_LOGGER_PATH == str(ROOT / "train_state" / rid / "attempts" / "attempt_001.jsonl")
    assert cfg.trainer.default_local_dir == str(ROOT / "train_state" / rid / "checkpoints")
    assert cfg.trainer.total_training_steps == spec.steps
    saves = [s for s in spec.save_steps if s > 0]
    assert all(s % cfg.trainer.save_freq == 0 for s in saves)
    assert a.strategy == "fsdp2" and cfg.actor_rollout_ref.ref.strategy == "fsdp2"
    assert cfg.trainer.nnodes == run["verl"]["nnodes"] and cfg.trainer.n_gpus_per_node == run["verl"]["n_gpus_per_node"]
    if spec.mask != "none":
        assert cfg.actor_rollout_ref.model.external_lib == "offprincipal.training.verl_mask_plugin"
        assert env.PNT_MASK_PATH.endswith(f"{rid}.npz")
    if spec.adapter != "none":
        assert cfg.actor_rollout_ref.model.lora_rank == spec.adapter_rank
        assert cfg.actor_rollout_ref.model.lora_alpha == spec.adapter_alpha
        assert r.load_format == "safetensors"
    if spec.adapter == "pissa":
        assert cfg.actor_rollout_ref.model.lora_adapter_path.endswith("pissa_init")
        assert cfg.actor_rollout_ref.model.path.endswith(f"pissa/{rid}")


def test_checked_keys_exist_in_verls_schema():
    cfg = OmegaConf.to_container(composed([]), resolve=False)
    for key in VERL_CHECKED_KEYS:
        if key.startswith("+"):
            continue  # added by the override itself (verl's ray_kwargs.ray_init.runtime_env is open)
        node = cfg
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, key
            node = node[part]


def test_the_cli_composes_a_masked_run_like_the_api():
    """verl's own entry point, `python -m verl.trainer.main_ppo ... --cfg job`, on one masked run."""
    rid = "ds15_mask_safe"
    overrides = overrides_of(rid, VERL_RUNS[rid])
    result = subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", *overrides, "--cfg", "job"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    start = re.search(r"^actor_rollout_ref:$", result.stdout, re.M)  # the printed config (after log lines)
    assert start, result.stdout[-2000:]
    printed = OmegaConf.create(result.stdout[start.start():])
    assert printed.actor_rollout_ref.model.external_lib == "offprincipal.training.verl_mask_plugin"
    assert printed.reward.reward_manager.name == "dapo"


def test_legacy_reward_keys_would_be_ignored():
    """Why only the new keys are emitted: with the legacy spelling verl keeps the naive manager."""
    cfg = composed(["+reward_model.reward_manager=dapo", "+custom_reward_function.path=/x.py"])
    assert cfg.reward.reward_manager.name == "naive" and cfg.reward.custom_reward_function.path is None
