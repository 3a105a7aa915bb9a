"""Preemption and resume of a verl run, with a fake trainer in verl's place: it reads the same
overrides, resumes from ``latest_checkpointed_iteration.txt`` (resume_mode=auto), logs each step
through a truncating file logger as verl's does, saves ``global_step_N/actor`` every save_freq
steps, and dies at chosen steps. The reruns continue from the last checkpoint, the merged
metrics have every step once, and a finished run launches nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_slurm import fake_env, read_log
from offprincipal.training.run_directory import read_manifest, read_metrics
from offprincipal.training.spec import RunSpec
from offprincipal.training.verl_backend import train

REPO = Path(__file__).resolve().parents[1]

FAKE_TRAINER = r'''
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
assert args[:2] == ["-m", "verl.trainer.main_ppo"], args
kv = {}
for arg in args[2:]:
    key, _, value = arg.partition("=")
    kv[key.lstrip("+")] = value.strip("'")
assert kv["trainer.resume_mode"] == "auto"
ckpt = Path(kv["trainer.default_local_dir"])
total, freq = int(kv["trainer.total_training_steps"]), int(kv["trainer.save_freq"])
log_path = Path(kv["ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"])
calls = Path(os.environ["FAKE_CALLS"])
latest = ckpt / "latest_checkpointed_iteration.txt"
start = int(latest.read_text()) + 1 if latest.is_file() else 1
with open(calls, "a") as fh:
    fh.write(json.dumps({"attempt": log_path.stem, "start": start}) + "\n")
if os.environ.get("RAY_ADDRESS"):
    with open(os.environ["FAKE_LOG"], "a") as fh:
        fh.write(json.dumps({"tool": "trainer", "node": os.environ.get("FAKE_NODE"), "ray_address": os.environ["RAY_ADDRESS"],
                             "nnodes": kv["trainer.nnodes"]}) + "\n")
die_at = [int(s) for s in os.environ.get("FAKE_DIE_AT", "").split(",") if s]
log_path.parent.mkdir(parents=True, exist_ok=True)
with open(log_path, "w") as log:  # verl's file logger truncates its file
    for step in range(start, total + 1):
        data = {"critic/score/mean": step / 100, "actor/pg_loss": -step / 1000, "fake/attempt": log_path.stem}
        log.write(json.dumps({"step": step, "data": data}) + "\n")
        log.flush()
        marker = ckpt.parent / f"died_at_{step}"
        if step in die_at and not marker.exists():
            marker.touch()
            os._exit(137)  # killed: no checkpoint of this step
        if step % freq == 0 or step == total:
            actor = ckpt / f"global_step_{step}" / "actor"
            actor.mkdir(parents=True, exist_ok=True)
            (actor / "model_world_size_1_rank_0.pt").write_bytes(step.to_bytes(4, "little"))
            (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 1}))
            latest.write_text(str(step))  # verl writes it after the shards
'''


@pytest.fixture
def fake_verl(tmp_path):
    python = tmp_path / "fake-python"
    python.write_text(f"#!{sys.executable}\n{FAKE_TRAINER}")
    python.chmod(0o755)
    return python


def run_training(tmp_path, python, monkeypatch, die_at="", resources=None, ray=None):
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_DIE_AT", die_at)
    spec = RunSpec(algorithm="dapo", steps=8, save_steps=[3, 6], prompts_per_step=4, mini_batch_prompts=1, group_size=2,
                   max_prompt_length=4, max_response_length=8)
    data = tmp_path / "train.parquet"
    data.touch()
    (tmp_path / "base").mkdir(exist_ok=True)
    return train(spec, tmp_path / "base", tmp_path / "run", state_dir=tmp_path / "state", train_files=[str(data)],
                 experiment_name="run", resources=resources or {"n_gpus_per_node": 1}, base_checkpoint="base", python=str(python),
                 ray=ray)


def launches(tmp_path):
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_killed_run_resumes_from_its_last_checkpoint_and_keeps_every_step_once(tmp_path, fake_verl, monkeypatch):
    # attempt 1 dies at step 5 (last checkpoint: 3), attempt 2 at step 7 (last checkpoint: 6)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="exited with status 137.*rerun to resume"):
            run_training(tmp_path, fake_verl, monkeypatch, die_at="5,7")
        assert not (tmp_path / "run" / "run.json").exists()
    manifest = run_training(tmp_path, fake_verl, monkeypatch, die_at="5,7")
    assert launches(tmp_path) == [{"attempt": "attempt_001", "start": 1}, {"attempt": "attempt_002", "start": 4},
                                  {"attempt": "attempt_003", "start": 7}]
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, 9))
    # a step logged by two attempts keeps the later one: its weights are the checkpoint's lineage
    assert [r["fake/attempt"] for r in rows] == ["attempt_001"] * 3 + ["attempt_002"] * 3 + ["attempt_003"] * 2
    assert [r["attempt"] for r in rows] == [r["fake/attempt"] for r in rows]
    assert [r["reward_mean"] for r in rows] == [s / 100 for s in range(1, 9)]
    assert manifest["attempts"] == ["attempt_001", "attempt_002", "attempt_003"] and manifest["steps"] == 8
    assert read_manifest(tmp_path / "run")["checkpoints"] == {"3": "checkpoints/global_step_3/actor",
                                                              "6": "checkpoints/global_step_6/actor"}
    shard = tmp_path / "state" / "checkpoints" / "global_step_6" / "actor" / "model_world_size_1_rank_0.pt"
    assert int.from_bytes(shard.read_bytes(), "little") == 6


def test_a_finished_run_launches_nothing_again(tmp_path, fake_verl, monkeypatch):
    run_training(tmp_path, fake_verl, monkeypatch)
    first = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    # the job died after training but before the run directory appeared: Snakemake removed it
    for name in ("run.json", "metrics.jsonl"):
        (tmp_path / "run" / name).unlink()
    run_training(tmp_path, fake_verl, monkeypatch)
    run_training(tmp_path, fake_verl, monkeypatch)
    assert launches(tmp_path) == [{"attempt": "attempt_001", "start": 1}]
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == first


def test_no_rule_declares_the_resumable_state_so_snakemake_never_deletes_it(tmp_path):
    """Snakemake removes a failed job's outputs; verl's checkpoints are no rule's output."""
    state = "results/paper/train_state/ds15_dense/checkpoints/latest_checkpointed_iteration.txt"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", state, "--configfile", str(REPO / "config" / "paper.yaml"),
         "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode != 0
    assert f"MissingRuleException:\nNo rule to produce {state}" in result.stdout + result.stderr
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "results/paper/runs/ds15_dense", "--configfile", str(REPO / "config" / "paper.yaml"),
         "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0 and "rule train_verl_run:" in run.stdout, run.stderr[-2000:]


def test_a_two_node_run_trains_through_the_ray_launcher(tmp_path, fake_verl, monkeypatch):
    # as under the slurm-jobstep plugin: of the allocation's variables only the job id is left
    env = fake_env(tmp_path / "slurm", ["node1", "node2"], SLURM_JOB_ID="77", FAKE_NODELIST="node[1-2]")
    for key in list(os.environ):
        if key.startswith("SLURM_"):
            monkeypatch.delenv(key)
    for key in ("PATH", "FAKE_LOG", "FAKE_HOSTS", "FAKE_STATE", "FAKE_NODELIST", "SLURM_JOB_ID"):
        monkeypatch.setenv(key, env[key])
    ray = {"num_cpus": 12, "start_timeout_s": 20, "poll_s": 0.05, "network": {"NCCL_SOCKET_IFNAME": "ib0"}}
    resources = {"nnodes": 2, "n_gpus_per_node": 2}
    with pytest.raises(RuntimeError, match="attempt_001 of run exited with status 137"):
        run_training(tmp_path, fake_verl, monkeypatch, die_at="4", resources=resources, ray=ray)
    run_training(tmp_path, fake_verl, monkeypatch, die_at="4", resources=resources, ray=ray)
    log = read_log(tmp_path / "slurm" / "calls.jsonl")
    starts = [c for c in log if c["tool"] == "ray" and c["argv"][0] == "start"]
    assert len(starts) == 4  # two attempts, two nodes each
    assert all("--num-cpus=12" in c["argv"] and "--num-gpus=2" in c["argv"] and c["nccl"] == "ib0" for c in starts)
    trainers = [c for c in log if c["tool"] == "trainer"]
    assert [(t["node"], t["ray_address"], t["nnodes"]) for t in trainers] == [("node1", "10.0.0.1:6379", "2")] * 2
    assert len([c for c in log if c["tool"] == "ray" and c["argv"][0] == "stop"]) == 4  # torn down after each attempt
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == list(range(1, 9))
