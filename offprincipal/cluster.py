"""SLURM resources of the GPU rules, from the config's ``cluster:`` section (profiles/slurm).

The profile (``profiles/slurm/config.yaml``) supplies what belongs to the user's account:
partitions and the account, from environment variables. The config's ``cluster:`` section
describes the nodes (GPUs, CPUs and memory per node) and the time limits; the functions here
turn it and each rule's own settings into the resources Snakemake hands to
snakemake-executor-plugin-slurm 2.8.0:

* training (verl on Ray): whole nodes -- ``--nodes=N --gres=gpu:G --exclusive``, all the
  node's CPUs and memory, ``tasks_per_gpu: 0`` so no ``--ntasks-per-gpu`` is emitted. A
  multi-node run also gets ``mpi: srun`` and one task per node: the jobstep plugin then runs
  the rule without its ``srun -n1`` wrapper and our launcher (:mod:`offprincipal.training.ray_slurm`)
  starts one Ray node per allocated node itself;
* evaluation (vLLM): ``tensor_parallel_size x data_parallel_size`` GPUs on one node;
* the SVD passes (``spectra``, ``pair_geometry``): ``svd_gpus`` GPUs (0: CPU);
* CPUs as ``cpus_per_task`` (``cpus_per_gpu`` x GPUs), never ``cpus_per_gpu``: the jobstep
  plugin lets a ``cpus_per_task`` (the profile's default) win over ``cpus_per_gpu``;
* everything else stays on CPU nodes with the profile's default resources.

A config without ``cluster:`` (the default, toy config) gets only the GPU counts the rules
always asked for, so local runs see no SLURM-only resources.
"""

from __future__ import annotations

from typing import Mapping


class ClusterConfigError(ValueError):
    """A run or evaluation does not fit the nodes the ``cluster:`` section describes."""


def training_resources(cluster: Mapping, verl: Mapping, *, run: str) -> dict:
    """Resources of one verl run (``runs.<run>.verl``) on the nodes of ``cluster``."""
    nnodes = int(verl.get("nnodes", 1))
    gpus = int(verl.get("n_gpus_per_node", cluster["gpus_per_node"]))
    if gpus > cluster["gpus_per_node"]:
        raise ClusterConfigError(
            f"runs.{run}.verl.n_gpus_per_node={gpus} exceeds cluster.gpus_per_node={cluster['gpus_per_node']}"
        )
    res = {
        "nodes": nnodes,
        # per node, not --gpus=<total>: SLURM may spread a total unevenly over the nodes
        "gres": f"gpu:{gpus}",
        "tasks_per_gpu": 0,
        "cpus_per_task": int(cluster["cpus_per_node"]),
        "mem_mb": int(cluster["mem_mb_per_node"]),
        "runtime": int(cluster["runtime"]["training"]),
        "slurm_extra": "--exclusive",
    }
    if nnodes > 1:
        # one task per node (SLURM gives every node of the allocation at least one task)
        res.update(mpi="srun", tasks=nnodes)
    return res


def evaluation_resources(cluster: Mapping, evaluations: Mapping) -> dict:
    """Resources of one (suite, checkpoint) evaluation."""
    res = {"runtime": int(cluster["runtime"]["evaluation"])}
    if evaluations.get("backend") != "vllm":
        res["mem_mb"] = int(cluster["mem_mb_per_gpu"])
        return res
    gpus = evaluation_gpus(evaluations)
    if gpus > cluster["gpus_per_node"]:
        raise ClusterConfigError(
            f"evaluations.backend_args: tensor_parallel_size x data_parallel_size = {gpus} GPUs exceeds "
            f"cluster.gpus_per_node={cluster['gpus_per_node']} (one evaluation runs on one node)"
        )
    res.update(gpu=gpus, tasks_per_gpu=0, cpus_per_task=int(cluster["cpus_per_gpu"]) * gpus,
               mem_mb=int(cluster["mem_mb_per_gpu"]) * gpus)
    return res


def evaluation_gpus(evaluations: Mapping) -> int:
    """GPUs one evaluation holds: vLLM's tensor x data parallel size; none for hf."""
    if evaluations.get("backend") != "vllm":
        return 0
    args = evaluations.get("backend_args", {})
    return int(args.get("tensor_parallel_size", 1)) * int(args.get("data_parallel_size", 1))


def svd_resources(cluster: Mapping) -> dict:
    """Resources of an SVD pass: exact fp64 SVDs of every projection take minutes per 8B model
    on a GPU (torch gesvd) where a few CPU cores take hours."""
    gpus = int(cluster["svd_gpus"])
    res = {"runtime": int(cluster["runtime"]["svd"]), "mem_mb": int(cluster["mem_mb_per_gpu"])}
    if gpus:
        res.update(gpu=gpus, tasks_per_gpu=0, cpus_per_task=int(cluster["cpus_per_gpu"]) * gpus)
    return res


def ray_network(cluster: Mapping) -> dict:
    """The ``cluster.network`` settings as the environment variables the launcher reads."""
    net = cluster.get("network", {})
    names = {"ray_interface": "RAY_NETWORK_INTERFACE", "nccl_socket_ifname": "NCCL_SOCKET_IFNAME",
             "gloo_socket_ifname": "GLOO_SOCKET_IFNAME"}
    return {env: net[key] for key, env in names.items() if net.get(key)}
