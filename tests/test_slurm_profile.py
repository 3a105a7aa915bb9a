"""The SLURM profile with the paper config: what every job of the DAG asks for (dry-run), and
the resource rules of offprincipal.cluster on shapes the paper config does not use."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from offprincipal.cluster import ClusterConfigError, evaluation_resources, svd_resources, training_resources
from offprincipal.config import load

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SLURM_ENV = {"SLURM_ACCOUNT": "acct42", "SLURM_CPU_PARTITION": "cpuq", "SLURM_GPU_PARTITION": "gpuq"}
SVD_RULES = {"spectra", "pair_geometry", "restore_checkpoint"}
GPU_RULES = {"train_verl_run", "evaluate"} | SVD_RULES


def parse_jobs(text: str) -> list[dict]:
    """Every job block of a `snakemake -n` listing: rule, wildcards and resources."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head:
            continue
        job = {"rule": head.group(1), "wildcards": {}, "resources": {}}
        for line in block.splitlines():
            line = line.strip()
            for field in ("wildcards", "resources"):
                if line.startswith(f"{field}: "):
                    for item in line[len(field) + 2:].split(", "):
                        key, _, value = item.partition("=")
                        job[field][key] = value
        jobs.append(job)
    return jobs


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_dry")
    result = subprocess.run(
        SNAKEMAKE + ["-n", "--profile", str(REPO / "profiles" / "slurm"), "--configfile", str(REPO / "config" / "paper.yaml"),
                     "-s", str(REPO / "Snakefile"), "--directory", str(workdir)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **SLURM_ENV},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return parse_jobs(result.stdout + result.stderr)


@pytest.fixture(scope="module")
def paper_config():
    return load(REPO / "config" / "paper.yaml")


def test_training_jobs_take_whole_nodes_of_their_run(paper_jobs, paper_config):
    cluster = paper_config["cluster"]
    verl_runs = {r: spec for r, spec in paper_config["runs"].items() if spec["backend"] == "verl"}
    jobs = [j for j in paper_jobs if j["rule"] == "train_verl_run"]
    assert sorted(j["wildcards"]["run"] for j in jobs) == sorted(verl_runs)
    multi = 0
    for job in jobs:
        res, verl = job["resources"], verl_runs[job["wildcards"]["run"]]["verl"]
        nnodes = verl.get("nnodes", 1)
        assert res["nodes"] == str(nnodes)
        assert res["gres"] == f"gpu:{verl.get('n_gpus_per_node', 8)}" and "gpu" not in res
        assert res["tasks_per_gpu"] == "0"
        assert res["cpus_per_task"] == str(cluster["cpus_per_node"]) and res["mem_mb"] == str(cluster["mem_mb_per_node"])
        assert res["runtime"] == str(cluster["runtime"]["training"]) and res["slurm_extra"] == "--exclusive"
        assert res["slurm_partition"] == "gpuq" and res["slurm_account"] == "acct42"
        if nnodes > 1:
            multi += 1
            assert res["mpi"] == "srun" and res["tasks"] == str(nnodes)
        else:
            assert res["mpi"] == ""
    assert multi > 0  # the paper's 1.5B runs use two nodes


def test_evaluations_ask_for_tensor_times_data_parallel_gpus(paper_jobs, paper_config):
    cluster, args = paper_config["cluster"], paper_config["evaluations"]["backend_args"]
    gpus = args["tensor_parallel_size"] * args["data_parallel_size"]
    jobs = [j for j in paper_jobs if j["rule"] == "evaluate"]
    assert len(jobs) >= len(paper_config["evaluations"]["checkpoints"]["math"])
    for job in jobs:
        res = job["resources"]
        assert res["gpu"] == str(gpus) and res["tasks_per_gpu"] == "0" and res["slurm_partition"] == "gpuq"
        assert res["cpus_per_task"] == str(cluster["cpus_per_gpu"] * gpus)
        assert res["mem_mb"] == str(cluster["mem_mb_per_gpu"] * gpus)
        assert res["runtime"] == str(cluster["runtime"]["evaluation"])


def test_svd_passes_on_gpus_and_every_other_job_on_cpu_nodes(paper_jobs, paper_config):
    cluster = paper_config["cluster"]
    svd = [j for j in paper_jobs if j["rule"] in SVD_RULES]
    assert {j["rule"] for j in svd} == SVD_RULES
    for job in svd:
        res = job["resources"]
        assert res["gpu"] == str(cluster["svd_gpus"]) and res["slurm_partition"] == "gpuq"
        assert res["runtime"] == str(cluster["runtime"]["svd"])
    cpu = [j for j in paper_jobs if j["rule"] not in GPU_RULES and j["rule"] != "all"]
    assert {"fetch_checkpoint", "compare_pair", "render_figure", "merge_verl_step"} <= {j["rule"] for j in cpu}
    for job in cpu:
        res = job["resources"]
        if not res:  # local rules print no resources
            continue
        assert res["slurm_partition"] == "cpuq", job
        assert not {"gpu", "gres", "nodes", "mpi"} & set(res), job


CLUSTER = {"gpus_per_node": 4, "cpus_per_node": 32, "mem_mb_per_node": 200000, "cpus_per_gpu": 6,
           "mem_mb_per_gpu": 40000, "svd_gpus": 0, "runtime": {"training": 600, "evaluation": 60, "svd": 30}}


def test_resource_rules_on_another_cluster_shape():
    res = training_resources(CLUSTER, {"nnodes": 3, "n_gpus_per_node": 4}, run="r")
    assert (res["nodes"], res["tasks"], res["mpi"], res["gres"]) == (3, 3, "srun", "gpu:4")
    assert "mpi" not in training_resources(CLUSTER, {"nnodes": 1, "n_gpus_per_node": 2}, run="r")
    with pytest.raises(ClusterConfigError, match=r"runs\.big\.verl\.n_gpus_per_node=8 exceeds cluster\.gpus_per_node=4"):
        training_resources(CLUSTER, {"nnodes": 1, "n_gpus_per_node": 8}, run="big")
    ev = evaluation_resources(CLUSTER, {"backend": "vllm", "backend_args": {"tensor_parallel_size": 2, "data_parallel_size": 2}})
    assert (ev["gpu"], ev["cpus_per_task"], ev["mem_mb"]) == (4, 24, 160000)
    with pytest.raises(ClusterConfigError, match="= 8 GPUs exceeds cluster.gpus_per_node=4"):
        evaluation_resources(CLUSTER, {"backend": "vllm", "backend_args": {"tensor_parallel_size": 4, "data_parallel_size": 2}})
    assert "gpu" not in evaluation_resources(CLUSTER, {"backend": "hf"})
    assert "gpu" not in svd_resources(CLUSTER)  # svd_gpus: 0 keeps the SVD passes on CPU nodes
