"""verl runs' metrics and run directory: attempts logged by verl's own file logger (Tracking),
merged into the contract's metrics.jsonl in step order without duplicates; the checks the
launcher makes before writing the manifest."""

from __future__ import annotations

import json

import pytest
from verl.utils.tracking import Tracking

from offprincipal.training.run_directory import METRICS_FILE, read_manifest, read_metrics
from offprincipal.training.spec import RunSpec
from offprincipal.training.verl_backend import (
    CHECKPOINTS_DIR,
    LATEST,
    build_overrides,
    finish,
    merge_attempt_logs,
    step_dir,
)


def verl_metrics(step: int, attempt: int) -> dict:
    """Metrics under the names verl 0.9.1's v1 trainer logs (values encode step and attempt)."""
    return {
        "actor/pg_loss": -0.01 * step, "actor/grad_norm": 0.5 + step, "actor/lr": 1e-6, "actor/kl_loss": 1e-4 * step,
        "actor/entropy": 0.7, "critic/score/mean": -0.5 + 0.01 * step + attempt, "response_length/mean": 100.0 + step,
        "response_length/clip_ratio": 0.0, "timing_s/step": 12.5, "training/global_step": step,
    }


def log_attempt(path, steps, attempt, monkeypatch):
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    tracker = Tracking(project_name="p", experiment_name="e", default_backend=["file"])
    for s in steps:
        tracker.log(data=verl_metrics(s, attempt), step=s)
    tracker.logger["file"].finish()


def test_the_file_logger_truncates_so_each_attempt_gets_its_own_file(tmp_path, monkeypatch):
    path = tmp_path / "same.jsonl"
    log_attempt(path, [1, 2, 3], 1, monkeypatch)
    log_attempt(path, [3, 4], 2, monkeypatch)  # a resumed run reusing the path
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [3, 4]  # steps 1-2 lost


def test_attempts_merge_in_step_order_with_the_later_attempt_winning(tmp_path, monkeypatch):
    a1, a2 = tmp_path / "attempt_001.jsonl", tmp_path / "attempt_002.jsonl"
    log_attempt(a1, [1, 2, 3, 4, 5], 1, monkeypatch)  # crashed after step 5; last checkpoint at step 3
    log_attempt(a2, [4, 5, 6, 7, 8], 2, monkeypatch)  # resumed from step 3
    with open(a2, "a") as fh:
        fh.write('{"step": 9, "data": {"actor/pg')  # killed mid-write: a truncated last line
    rows = merge_attempt_logs([a1, a2], updates_per_step=4, steps=8)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["attempt"] for r in rows] == ["attempt_001"] * 3 + ["attempt_002"] * 5
    r4 = rows[3]
    assert r4["reward_mean"] == pytest.approx(-0.5 + 0.04 + 2)  # attempt 2's row for step 4
    assert r4["kl_k3"] == pytest.approx(4e-4) and r4["loss"] == pytest.approx(-0.04) and r4["grad_norm"] == 4.5
    assert r4["updates"] == 16 and r4["rollout_policy_step"] == 3 and r4["step_seconds"] == 12.5
    assert r4["response_length_mean"] == 104.0 and r4["actor/kl_loss"] == pytest.approx(4e-4)  # raw name kept beside
    assert "kl" not in r4  # verl measures no exact KL
    with pytest.raises(ValueError, match="outside the run's 1..6"):
        merge_attempt_logs([a1, a2], updates_per_step=4, steps=6)


def test_finish_writes_the_contract_and_refuses_incomplete_runs(tmp_path, monkeypatch):
    spec = RunSpec(algorithm="dapo", steps=8, save_steps=[4], prompts_per_step=4, mini_batch_prompts=1, group_size=2,
                   max_prompt_length=4, max_response_length=8)
    state = tmp_path / "state"
    (state / "attempts").mkdir(parents=True)
    log_attempt(state / "attempts" / "attempt_001.jsonl", range(1, 6), 1, monkeypatch)
    log_attempt(state / "attempts" / "attempt_002.jsonl", range(5, 9), 2, monkeypatch)
    _, launch = build_overrides(spec, model_path=tmp_path / "base", train_files=[str(tmp_path / "t.parquet")],
                                state_dir=state, experiment_name="run", attempt="attempt_002", resources={"n_gpus_per_node": 1})
    kw = dict(base_checkpoint="base_ckpt", mask_file=None, pissa_dir=None, launch=launch, attempt="attempt_002")
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="last checkpoint is step 0"):
        finish(spec, tmp_path / "base", out, state, **kw)
    (state / CHECKPOINTS_DIR).mkdir()
    (state / CHECKPOINTS_DIR / LATEST).write_text("8")
    (state / step_dir(8)).mkdir(parents=True)
    (state / step_dir(8) / "fsdp_config.json").write_text('{"world_size": 1}')
    with pytest.raises(RuntimeError, match=r"no shards for steps \[4\]"):
        finish(spec, tmp_path / "base", out, state, **kw)
    (state / step_dir(4)).mkdir(parents=True)
    (state / step_dir(4) / "fsdp_config.json").write_text('{"world_size": 1}')
    manifest = finish(spec, tmp_path / "base", out, state, **kw)
    assert read_manifest(out) == manifest
    assert manifest["backend"] == "verl" and manifest["checkpoint_format"] == "verl_fsdp"
    assert manifest["checkpoints"] == {"4": step_dir(4)} and manifest["final"] == step_dir(8)
    assert manifest["attempts"] == ["attempt_001", "attempt_002"]
    assert manifest["reference_base"]["checkpoint"] == "base_ckpt"
    assert "kl_k3" in manifest["kl_estimator"]
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 9))
    assert (out / METRICS_FILE).is_file()


def test_pissa_runs_label_the_residual_as_not_the_base(tmp_path, monkeypatch):
    spec = RunSpec(algorithm="dapo", steps=2, adapter="pissa", adapter_rank=4, adapter_alpha=8.0, prompts_per_step=2,
                   group_size=2, max_prompt_length=4, max_response_length=8)
    state = tmp_path / "state"
    (state / "attempts").mkdir(parents=True)
    log_attempt(state / "attempts" / "attempt_001.jsonl", [1, 2], 1, monkeypatch)
    (state / step_dir(2)).mkdir(parents=True)
    (state / step_dir(2) / "fsdp_config.json").write_text("{}")
    (state / CHECKPOINTS_DIR / LATEST).write_text("2")
    _, launch = build_overrides(spec, model_path=tmp_path / "pissa", train_files=["/t.parquet"], state_dir=state,
                                experiment_name="r", attempt="attempt_001", pissa_adapter_path=tmp_path / "pissa" / "pissa_init")
    m = finish(spec, tmp_path / "orig", tmp_path / "run", state, base_checkpoint="orig", mask_file=None,
               pissa_dir=tmp_path / "pissa", launch=launch, attempt="attempt_001")
    assert m["base"] == str(tmp_path / "pissa")  # what the adapter was trained on
    assert m["reference_base"]["path"] == str(tmp_path / "orig")  # what the analyses compare against
    assert "NOT the base to compare against" in m["reference_base"]["label"]
    assert "NOT the original base" in m["kl_estimator"]["reference"]
