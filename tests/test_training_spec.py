"""RunSpec validation, (de)serialisation and the verl 0.9.1 override mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from offprincipal.training.spec import (
    VERL_DOCUMENTED_KEYS,
    RunSpec,
    SpecError,
    override_key,
    to_verl_overrides,
)

VERL_MD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "verl.md"


def _overrides(spec, **kw) -> dict[str, str]:
    return dict(o.split("=", 1) for o in to_verl_overrides(spec, **kw))


def test_defaults_resolve_per_algorithm():
    dapo = RunSpec(algorithm="dapo").resolved()
    assert (dapo.clip_ratio_low, dapo.clip_ratio_high) == (0.2, 0.28)
    assert dapo.loss_agg_mode == "token-mean" and dapo.overlong_buffer is True
    assert dapo.mini_batch_prompts == dapo.prompts_per_step and dapo.updates_per_step == 1
    assert dapo.kl_coef == 0.0 and dapo.kl_in_loss is False and dapo.log_kl is True
    grpo = RunSpec(algorithm="grpo").resolved()
    assert (grpo.clip_ratio_low, grpo.clip_ratio_high) == (0.2, 0.2)
    assert grpo.loss_agg_mode == "seq-mean-token-mean" and grpo.overlong_buffer is False
    assert RunSpec(prompts_per_step=8, mini_batch_prompts=2, ppo_epochs=3).updates_per_step == 12


def test_round_trip_and_lists():
    spec = RunSpec(algorithm="grpo", save_steps=[1, 5], betas=[0.9, 0.95], mask="safe", mask_rank_k=8)
    assert spec.save_steps == (1, 5) and spec.betas == (0.9, 0.95)
    d = spec.to_dict()
    assert d["save_steps"] == [1, 5] and isinstance(d["adapter_target_modules"], list)
    assert RunSpec.from_dict(d) == spec


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"algorithm": "ppo"}, "algorithm"),
        ({"steps": 0}, "steps"),
        ({"save_steps": [3, 11], "steps": 10}, "save_steps"),
        ({"lr": -1.0}, "lr"),
        ({"lr_scheduler": "cosine"}, "lr_scheduler"),
        ({"betas": (0.9,)}, "betas"),
        ({"group_size": 1}, "group_size"),
        ({"prompts_per_step": 8, "mini_batch_prompts": 3}, "mini_batch_prompts"),
        ({"clip_ratio_high": 1.5}, "clip_ratio_high"),
        ({"loss_agg_mode": "seq-mean-token-sum"}, "loss_agg_mode"),
        ({"kl_coef": 0.01}, "kl_coef"),
        ({"overlong_buffer_len": 99, "max_response_length": 8}, "overlong_buffer_len"),
        ({"master_dtype": "bfloat16"}, "master_dtype"),
        ({"mask": "top"}, "mask"),
        ({"mask_alpha": 0.0}, "mask_alpha"),
        ({"adapter": "lora", "mask": "safe"}, "mask"),
        ({"adapter": "dora"}, "adapter"),
        ({"algorithm": "sft", "dynamic_sampling": True}, "dynamic_sampling"),
    ],
)
def test_validation_names_the_field(kw, field):
    with pytest.raises(SpecError) as exc:
        RunSpec(**kw)
    assert exc.value.field == field
    assert f"RunSpec.{field}" in str(exc.value)


def test_from_dict_rejects_unknown_field():
    with pytest.raises(SpecError, match="RunSpec.learning_rate: unknown field"):
        RunSpec.from_dict({"learning_rate": 1e-6})


def test_dapo_maps_to_verl_clip_higher_token_mean_no_kl():
    spec = RunSpec(
        algorithm="dapo",
        steps=20,
        save_steps=[5, 10, 20],
        lr=1e-6,
        weight_decay=0.1,
        prompts_per_step=256,
        group_size=12,
        mini_batch_prompts=64,
        max_response_length=8192,
        overlong_buffer_len=1024,
    )
    o = _overrides(spec)
    assert o["algorithm.adv_estimator"] == "grpo"
    assert o["actor_rollout_ref.actor.clip_ratio_low"] == "0.2"
    assert o["actor_rollout_ref.actor.clip_ratio_high"] == "0.28"
    assert o["actor_rollout_ref.actor.loss_agg_mode"] == "token-mean"
    # no KL anywhere in the objective: none in the reward, coefficient 0 in the loss
    assert o["algorithm.use_kl_in_reward"] == "False"
    assert o["algorithm.kl_ctrl.kl_coef"] == "0.0"
    assert o["actor_rollout_ref.actor.kl_loss_coef"] == "0.0"
    # KL to the base is still logged (verl.md §7 option A: 0 x KL)
    assert o["actor_rollout_ref.actor.use_kl_loss"] == "True"
    assert o["reward.reward_manager.name"] == "dapo"
    assert o["+reward.reward_kwargs.overlong_buffer_cfg.enable"] == "True"
    assert o["+reward.reward_kwargs.overlong_buffer_cfg.len"] == "1024"
    assert o["+reward.reward_kwargs.max_resp_len"] == "8192"
    assert o["data.train_batch_size"] == "256" and o["actor_rollout_ref.rollout.n"] == "12"
    assert o["actor_rollout_ref.actor.ppo_mini_batch_size"] == "64"
    assert o["actor_rollout_ref.actor.optim.lr"] == "1e-06"
    assert o["actor_rollout_ref.actor.optim.weight_decay"] == "0.1"
    assert o["actor_rollout_ref.actor.optim.betas"] == "[0.9,0.999]"
    assert o["trainer.save_freq"] == "5" and o["trainer.total_training_steps"] == "20"
    assert o["algorithm.filter_groups.enable"] == "False"


def test_kl_off_entirely_and_grpo_mapping():
    o = _overrides(RunSpec(algorithm="grpo", log_kl=False))
    assert o["actor_rollout_ref.actor.use_kl_loss"] == "False"
    assert o["actor_rollout_ref.actor.loss_agg_mode"] == "seq-mean-token-mean"
    assert o["actor_rollout_ref.actor.clip_ratio_high"] == "0.2"
    assert not any(k.startswith("+reward.reward_kwargs") for k in o)


def test_masks_and_pissa_need_their_verl_plugins():
    with pytest.raises(SpecError, match="RunSpec.mask"):
        to_verl_overrides(RunSpec(mask="safe"))
    o = _overrides(RunSpec(mask="safe"), mask_plugin="offprincipal_verl.masked", mask_path="/m.npz")
    assert o["actor_rollout_ref.actor.strategy"] == "fsdp2"
    assert o["actor_rollout_ref.model.external_lib"] == "offprincipal_verl.masked"
    assert o["+ray_kwargs.ray_init.runtime_env.env_vars.PNT_MASK_PATH"] == "/m.npz"
    with pytest.raises(SpecError, match="RunSpec.adapter"):
        to_verl_overrides(RunSpec(adapter="pissa"))
    o = _overrides(RunSpec(adapter="pissa", adapter_rank=32), pissa_adapter_path="/r/pissa_init")
    assert o["actor_rollout_ref.model.lora_rank"] == "32"
    assert o["actor_rollout_ref.model.lora_adapter_path"] == "/r/pissa_init"
    assert o["actor_rollout_ref.rollout.load_format"] == "safetensors"
    with pytest.raises(SpecError, match="RunSpec.algorithm"):
        to_verl_overrides(RunSpec(algorithm="sft"))
    with pytest.raises(SpecError, match="RunSpec.eps"):
        to_verl_overrides(RunSpec(eps=1e-6))


def _all_override_keys() -> set[str]:
    specs = [
        (RunSpec(algorithm="dapo", dynamic_sampling=True, save_steps=[2, 4]), {}),
        (RunSpec(algorithm="grpo", log_kl=False), {}),
        (RunSpec(algorithm="grpo", kl_in_loss=True, kl_coef=0.001), {}),
        (RunSpec(mask="random"), {"mask_plugin": "p", "mask_path": "m"}),
        (RunSpec(adapter="lora"), {}),
        (RunSpec(adapter="pissa"), {"pissa_adapter_path": "a"}),
    ]
    return {override_key(o) for spec, kw in specs for o in to_verl_overrides(spec, **kw)}


def test_every_override_key_is_documented():
    keys = _all_override_keys()
    assert keys <= set(VERL_DOCUMENTED_KEYS), sorted(keys - set(VERL_DOCUMENTED_KEYS))


@pytest.mark.skipif(not VERL_MD.is_file(), reason="shared/reference/verl.md not present")
def test_documented_keys_appear_in_verl_md():
    text = VERL_MD.read_text()
    for key in VERL_DOCUMENTED_KEYS:
        bare = key.lstrip("+")
        if bare in text:
            continue
        # keys listed as a leaf under a documented prefix ("under `actor_rollout_ref.actor.`")
        prefix, leaf = bare.rsplit(".", 1)
        assert f"`{leaf}" in text and prefix in text, key


# ---------------------------------------------------------------------------- the full verl command

from offprincipal.training.spec import (  # noqa: E402
    MASK_PLUGIN,
    VERL_CHECKED_KEYS,
    VerlLaunch,
    check_verl_spec,
    verl_command,
)


def _launch(**kw):
    base = dict(model_path="/m/base", train_files=["/d/train.parquet"], reward_path="/r/verl_reward.py",
                output_dir="/s/checkpoints", metrics_path="/s/attempts/attempt_002.jsonl", experiment_name="run_a",
                n_gpus_per_node=4, nnodes=2, rollout_tensor_parallel=2, gpu_memory_utilization=0.6)
    base.update(kw)
    return VerlLaunch(**base)


def test_launch_adds_paths_logger_resume_and_resources():
    spec = RunSpec(algorithm="dapo", seed=7, steps=10, save_steps=[5], max_prompt_length=100, max_response_length=400)
    o = _overrides(spec, launch=_launch())
    assert o["actor_rollout_ref.model.path"] == "/m/base"
    assert o["data.train_files"] == "[/d/train.parquet]" and o["data.val_files"] == "[/d/train.parquet]"
    assert o["reward.custom_reward_function.path"] == "/r/verl_reward.py"
    assert o["reward.custom_reward_function.name"] == "compute_score"
    assert o["trainer.default_local_dir"] == "/s/checkpoints" and o["trainer.resume_mode"] == "auto"
    assert o["trainer.logger"] == "[console,file]"
    assert o["+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"] == "/s/attempts/attempt_002.jsonl"
    assert (o["trainer.nnodes"], o["trainer.n_gpus_per_node"]) == ("2", "4")
    assert o["actor_rollout_ref.rollout.name"] == "vllm"
    assert o["actor_rollout_ref.rollout.tensor_model_parallel_size"] == "2"
    assert o["actor_rollout_ref.rollout.gpu_memory_utilization"] == "0.6"
    assert o["data.seed"] == "7" and o["actor_rollout_ref.rollout.seed"] == "7"
    assert o["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"] == "1000"  # 2 x (prompt + response)
    assert o["trainer.test_freq"] == "-1" and o["trainer.val_before_train"] == "False"
    keys = [override_key(x) for x in to_verl_overrides(spec, launch=_launch())]
    assert len(keys) == len(set(keys))  # Hydra refuses a key given twice
    assert set(keys) <= set(VERL_DOCUMENTED_KEYS) | set(VERL_CHECKED_KEYS)
    assert verl_command(["a=1"], python="py") == ["py", "-m", "verl.trainer.main_ppo", "a=1"]


def test_paths_with_spaces_are_quoted_and_relative_paths_refused():
    o = _overrides(RunSpec(), launch=_launch(output_dir="/my runs/ckpt"))
    assert o["trainer.default_local_dir"] == "'/my runs/ckpt'"
    with pytest.raises(ValueError, match="VerlLaunch.model_path: must be an absolute path"):
        _launch(model_path="relative/base")
    with pytest.raises(ValueError, match="quote"):
        to_verl_overrides(RunSpec(), launch=_launch(output_dir="/it's"))


def test_masked_launch_needs_the_report_dir_and_emits_the_plugin():
    spec = RunSpec(mask="low")
    with pytest.raises(SpecError, match="mask_report_dir"):
        to_verl_overrides(spec, launch=_launch(), mask_plugin=MASK_PLUGIN, mask_path="/m.npz")
    o = _overrides(spec, launch=_launch(mask_report_dir="/s/reports"), mask_plugin=MASK_PLUGIN, mask_path="/m.npz")
    assert o["actor_rollout_ref.model.external_lib"] == MASK_PLUGIN
    assert o["+ray_kwargs.ray_init.runtime_env.env_vars.PNT_MASK_REPORT_DIR"] == "/s/reports"


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"save_steps": [0, 5]}, "save_steps"),
        ({"adapter": "lora", "adapter_dropout": 0.1}, "adapter_dropout"),
        ({"adapter": "lora", "adapter_alpha": 16.5}, "adapter_alpha"),
        ({"algorithm": "sft"}, "algorithm"),
    ],
)
def test_what_verl_cannot_run_is_refused(kw, field):
    with pytest.raises(SpecError) as err:
        check_verl_spec(RunSpec(**kw))
    assert err.value.field == field
