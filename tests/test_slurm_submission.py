"""The submission path: Snakemake with snakemake-executor-plugin-slurm and the profile, against
fake sbatch/sacct/srun/scontrol on PATH (tests/fake_slurm.py). The GPU rules of the paper config
are submitted with the nodes, GPUs, tasks and partitions of their config, read back from the
sbatch command lines. The fake sbatch runs nothing: the test stops Snakemake once every job is
submitted."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_slurm import fake_env, read_log
from offprincipal.config import load

REPO = Path(__file__).resolve().parents[1]

# target -> (rule, existing inputs that stand in for upstream jobs)
TARGETS = {
    "results/paper/runs/ds15_dense": ["results/paper/checkpoints/ds_r1_distill_qwen_1p5b.json", "results/paper/datasets/dsr/"],
    "results/paper/runs/q3_8b_dapo": ["results/paper/checkpoints/qwen3_8b_base.json", "results/paper/datasets/dapo_math/"],
    "results/paper/runs/llama3b_lora_r64_lr1e4": ["results/paper/checkpoints/llama3p2_3b_instruct.json", "results/paper/datasets/math/"],
    "results/paper/eval/math/ds_r1_distill_qwen_1p5b.json": [],
    "results/paper/spectra/ds_r1_distill_qwen_1p5b.safetensors": [],
    "results/paper/datasets/deepmath.json": [],
}


def sbatch_options(argv: list[str]) -> dict:
    """``--key=value`` / ``--key value`` / ``-k value`` options of one sbatch call (flags -> True)."""
    opts, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--wrap"):
            opts["wrap"] = arg.split("=", 1)[1] if "=" in arg else argv[i + 1]
            break
        if arg.startswith("-"):
            key, eq, value = arg.lstrip("-").partition("=")
            if eq:
                opts[key] = value
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                opts[key] = argv[i + 1]
                i += 1
            else:
                opts[key] = True
        i += 1
    return opts


@pytest.fixture(scope="module")
def submissions(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm_submit")
    work = tmp / "work"
    for inputs in TARGETS.values():
        for path in inputs:
            target = work / path
            if path.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("{}")
    env = fake_env(tmp, ["n1"], SLURM_ACCOUNT="acct42", SLURM_CPU_PARTITION="cpuq", SLURM_GPU_PARTITION="gpuq",
                   PYTHONPATH=str(REPO))
    env.pop("SLURM_JOB_ID", None)
    command = [sys.executable, "-m", "snakemake", *TARGETS, "--profile", str(REPO / "profiles" / "slurm"),
               "--configfile", str(REPO / "config" / "paper.yaml"), "-s", str(REPO / "Snakefile"), "--directory", str(work),
               "--slurm-init-seconds-before-status-checks", "1"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    want = len(TARGETS)
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len([c for c in read_log(tmp / "calls.jsonl") if c["tool"] == "sbatch"]) >= want:
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Snakemake cancels its jobs (fake scancel) and exits
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = proc.stdout.read()
    calls = [c for c in read_log(tmp / "calls.jsonl") if c["tool"] == "sbatch"]
    assert len(calls) == want, output[-4000:]
    by_rule = {}
    for call in calls:
        opts = sbatch_options(call["argv"])
        comment = opts["comment"]
        rule = comment.removeprefix("rule_").split("_wildcards_")[0]
        by_rule.setdefault(rule, []).append((comment, opts))
    return by_rule


def test_training_jobs_ask_for_whole_nodes_and_one_task_per_node(submissions):
    config = load(REPO / "config" / "paper.yaml")
    cluster = config["cluster"]
    jobs = submissions["train_verl_run"]
    assert len(jobs) == 3
    seen = set()
    for comment, opts in jobs:
        run = next(r for r in ("ds15_dense", "q3_8b_dapo", "llama3b_lora_r64_lr1e4") if r in comment)
        seen.add(run)
        verl = config["runs"][run]["verl"]
        nnodes, gpus = verl.get("nnodes", 1), verl.get("n_gpus_per_node", 8)
        assert opts["nodes"] == str(nnodes) and opts["gres"] == f"gpu:{gpus}" and "gpus" not in opts
        assert "ntasks-per-gpu" not in opts  # tasks_per_gpu: 0
        assert opts["exclusive"] is True and opts["p"] == "gpuq" and opts["A"] == "acct42"
        assert opts["cpus-per-task"] == str(cluster["cpus_per_node"]) and opts["mem"] == str(cluster["mem_mb_per_node"])
        assert opts["t"] == str(cluster["runtime"]["training"]) and opts["requeue"] is True
        if nnodes > 1:
            assert opts["ntasks"] == str(nnodes)  # one Ray node per allocated node
        else:
            assert "ntasks" not in opts
    assert {config["runs"][r]["verl"]["nnodes"] for r in seen} == {1, 2, 4}


def test_evaluation_and_svd_jobs_ask_for_their_gpus(submissions):
    config = load(REPO / "config" / "paper.yaml")
    cluster, args = config["cluster"], config["evaluations"]["backend_args"]
    (_, ev), = submissions["evaluate"]
    gpus = args["tensor_parallel_size"] * args["data_parallel_size"]
    assert ev["gpus"] == str(gpus) and "gres" not in ev and "ntasks-per-gpu" not in ev and ev["p"] == "gpuq"
    assert ev["cpus-per-task"] == str(cluster["cpus_per_gpu"] * gpus) and ev["t"] == str(cluster["runtime"]["evaluation"])
    (_, sv), = submissions["spectra"]
    assert sv["gpus"] == str(cluster["svd_gpus"]) and sv["p"] == "gpuq" and "ntasks-per-gpu" not in sv


def test_cpu_jobs_stay_on_the_cpu_partition(submissions):
    (_, opts), = submissions["hub_dataset"]
    assert opts["p"] == "cpuq" and opts["ntasks"] == "1"
    assert not {"gpus", "gres", "nodes", "exclusive"} & set(opts)
