"""A Ray cluster across a SLURM job's nodes, for verl's multi-node runs.

Inside an allocation of N nodes (``sbatch --nodes=N``; the workflow's ``train_verl_run`` is
an ``mpi`` job, so it runs once, on the first node, and starts the job steps itself):

1. the node list comes from ``scontrol show hostnames $SLURM_JOB_NODELIST`` (the list itself
   from ``scontrol show job $SLURM_JOB_ID`` where the slurm-jobstep plugin removed it), one host per line
   -- verl's ``ray_on_slurm.slurm`` keeps it as one quoted word (verl #548), so its
   ``srun -w <head>`` names every node at once;
2. the head (first node) starts with ``srun --nodes=1 --ntasks=1 --cpus-per-task=C --gres=gpu:G
   -w HEAD ray start --head --block``, the workers on the other nodes with ``--address
   HEAD_IP:PORT``, each step and each Ray node with its CPUs and GPUs given explicitly;
3. ``ray status`` is polled until every node has joined (active or idle) (or a node's ``srun`` died, or the
   timeout passed: then the launch fails, naming what is missing);
4. the command (verl's trainer) runs on the head with ``srun --overlap`` and ``RAY_ADDRESS``
   set, so verl's ``ray.init()`` joins this cluster;
5. on exit, failure or SIGTERM (preemption, time limit), ``ray stop --force`` runs on every
   node and the ``ray start`` steps are terminated.

Multi-NIC clusters: ``RAY_NETWORK_INTERFACE`` (e.g. ``ib0``) makes each node register with
the IPv4 address of that interface (``ip -4 -o addr show dev IFACE`` on the node, as verl
PR #7386 does); ``NCCL_SOCKET_IFNAME`` and ``GLOO_SOCKET_IFNAME`` are passed to every node's
environment. A single-node run starts nothing: verl's ``ray.init()`` makes a local cluster.

Entry point: ``python -m offprincipal.training.ray_slurm [--num-cpus N] [--num-gpus G] -- CMD ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

logger = logging.getLogger(__name__)

NETWORK_VARIABLES = ("RAY_NETWORK_INTERFACE", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")


class RayLaunchError(RuntimeError):
    """The Ray cluster could not be started across the allocation; the message says which node."""


@dataclass(frozen=True)
class RaySettings:
    """How the Ray nodes start. ``num_cpus``/``num_gpus`` are per node."""

    num_cpus: int
    num_gpus: int
    port: int = 6379
    ray_interface: str | None = None  # RAY_NETWORK_INTERFACE
    nccl_socket_ifname: str | None = None  # NCCL_SOCKET_IFNAME
    gloo_socket_ifname: str | None = None  # GLOO_SOCKET_IFNAME
    start_timeout_s: float = 600.0
    poll_s: float = 5.0
    stop_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, defaults: Mapping[str, str] | None = None, **kwargs) -> "RaySettings":
        """Network settings from the environment (``RAY_NETWORK_INTERFACE``, ...), falling back
        to ``defaults`` (the config's ``cluster.network``); CPUs/GPUs from ``kwargs`` or SLURM."""
        merged = {**(defaults or {}), **{k: env[k] for k in NETWORK_VARIABLES if env.get(k)}}
        if "num_cpus" not in kwargs:
            kwargs["num_cpus"] = _slurm_int(env, "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")
        if "num_gpus" not in kwargs:
            kwargs["num_gpus"] = _slurm_int(env, "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE")
        return cls(
            ray_interface=merged.get("RAY_NETWORK_INTERFACE"),
            nccl_socket_ifname=merged.get("NCCL_SOCKET_IFNAME"),
            gloo_socket_ifname=merged.get("GLOO_SOCKET_IFNAME"),
            **kwargs,
        )

    def node_env(self, env: Mapping[str, str]) -> dict:
        """The environment of every job step: the NCCL/Gloo interfaces set when given."""
        out = dict(env)
        if self.nccl_socket_ifname:
            out["NCCL_SOCKET_IFNAME"] = self.nccl_socket_ifname
        if self.gloo_socket_ifname:
            out["GLOO_SOCKET_IFNAME"] = self.gloo_socket_ifname
        return out


def _slurm_int(env: Mapping[str, str], *names: str) -> int:
    """The first count among SLURM variables like ``64``, ``a100:8`` or ``64(x2)``."""
    for name in names:
        value = env.get(name, "").split(",")[0].rsplit(":", 1)[-1]
        match = re.match(r"\d+", value)
        if match:
            return int(match.group(0))
    raise RayLaunchError(f"none of {', '.join(names)} is set: pass the per-node CPU/GPU count explicitly")


def job_nodelist(env: Mapping[str, str]) -> str:
    """The job's compressed node list (``gpu-a[01-02],gpu-b07``). The slurm-jobstep plugin
    removes ``SLURM_JOB_NODELIST`` (and every other allocation variable but the job id) from
    the environment of the rule it runs, so without it the list is asked of ``scontrol``."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if nodelist:
        return nodelist
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job:
        raise RayLaunchError("neither SLURM_JOB_NODELIST nor SLURM_JOB_ID is set: a multi-node run needs a SLURM "
                             "allocation (sbatch --nodes=N)")
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True, env=dict(env))
    match = re.search(r"(?:^|\s)NodeList=(\S+)", out.stdout) if out.returncode == 0 else None
    if not match or match.group(1) == "(null)":
        raise RayLaunchError(f"scontrol show job {job} gave no NodeList (exit {out.returncode}): {out.stderr.strip()}")
    return match.group(1)


def node_list(env: Mapping[str, str]) -> list[str]:
    """The job's hosts, one per element, in SLURM's order (the first is the head)."""
    nodelist = job_nodelist(env)
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, env=dict(env))
    if out.returncode != 0:
        raise RayLaunchError(f"scontrol show hostnames {nodelist} failed ({out.returncode}): {out.stderr.strip()}")
    nodes = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if not nodes:
        raise RayLaunchError(f"scontrol show hostnames {nodelist} listed no host")
    return nodes


def on_node(node: str, command: Sequence[str], *, overlap: bool, resources: Sequence[str] = ()) -> list[str]:
    """``srun`` of one task on ``node``. ``--overlap`` for steps that share the node's CPUs
    with its Ray step (address look-up, the trainer, ``ray stop``); ``resources``: the step's
    own CPU/GPU flags."""
    return ["srun", "--nodes=1", "--ntasks=1", *(["--overlap"] if overlap else []), *resources, "-w", node, *command]


def parse_ip(output: str) -> str | None:
    """The first IPv4 address in ``hostname --ip-address`` or ``ip -4 -o addr show`` output."""
    match = re.search(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])", output)
    return match.group(1) if match else None


def count_nodes(status: str) -> int:
    """Live nodes in ``ray status`` output: the counts under ``Active:`` and, since Ray's
    autoscaler v2, ``Idle:`` (a fresh cluster's nodes are all idle). Each line is
    `` <count> <node type>``; the type of a node started by hand is ``node_<id>`` (v1) or
    empty (v2), so only the count is read."""
    total, section = 0, None
    for line in status.splitlines():
        if line and not line[0].isspace():
            section = line.strip() if line.strip() in ("Active:", "Idle:") else None
            continue
        if section:
            match = re.fullmatch(r"\s*(\d+)(?:\s.*)?", line)
            if match:
                total += int(match.group(1))
    return total


class RayCluster:
    """Context manager: Ray started on every node of ``nodes`` (head first), stopped on exit."""

    def __init__(self, nodes: Sequence[str], settings: RaySettings, env: Mapping[str, str] | None = None):
        if not nodes:
            raise RayLaunchError("no nodes to start Ray on")
        self.nodes = list(nodes)
        self.settings = settings
        self.env = settings.node_env(os.environ if env is None else env)
        self.steps: dict[str, subprocess.Popen] = {}
        self.head_ip: str | None = None

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.settings.port}"

    def node_ip(self, node: str) -> str:
        iface = self.settings.ray_interface
        command = ["ip", "-4", "-o", "addr", "show", "dev", iface] if iface else ["hostname", "--ip-address"]
        out = subprocess.run(on_node(node, command, overlap=True), capture_output=True, text=True, env=self.env)
        ip = parse_ip(out.stdout) if out.returncode == 0 else None
        if not ip:
            what = f"interface {iface}" if iface else "hostname --ip-address"
            raise RayLaunchError(f"node {node}: no IPv4 address from {what} (exit {out.returncode}): {out.stderr.strip()}")
        return ip

    def _ray_start(self, node: str, *args: str) -> None:
        s = self.settings
        command = ["ray", "start", *args, f"--num-cpus={s.num_cpus}", f"--num-gpus={s.num_gpus}", "--block"]
        logger.info("starting Ray on %s: %s", node, " ".join(command))
        # --block keeps the step alive as long as the Ray node: a daemonised `ray start` would
        # be killed with its step by SLURM's process tracking
        # explicit CPUs and GPUs for the step: the jobstep plugin strips SLURM_CPUS_PER_TASK and
        # the other allocation variables, so srun would otherwise give the Ray node one CPU
        step = [f"--cpus-per-task={s.num_cpus}", *([f"--gres=gpu:{s.num_gpus}"] if s.num_gpus else [])]
        self.steps[node] = subprocess.Popen(on_node(node, command, overlap=False, resources=step), env=self.env)

    def start(self) -> "RayCluster":
        head, workers = self.nodes[0], self.nodes[1:]
        self.head_ip = self.node_ip(head)
        self._ray_start(head, "--head", f"--node-ip-address={self.head_ip}", f"--port={self.settings.port}")
        self.wait_for_nodes(1)
        for node in workers:
            extra = [f"--node-ip-address={self.node_ip(node)}"] if self.settings.ray_interface else []
            self._ray_start(node, f"--address={self.address}", *extra)
        self.wait_for_nodes(len(self.nodes))
        return self

    def wait_for_nodes(self, n: int) -> int:
        """Poll ``ray status`` until ``n`` nodes are active; fail when a node's step died or
        the timeout passed."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        joined = 0
        while True:
            dead = {node: p.returncode for node, p in self.steps.items() if p.poll() is not None}
            if dead:
                raise RayLaunchError(f"Ray exited on {', '.join(f'{k} (status {v})' for k, v in dead.items())} "
                                     f"before {n} of {len(self.nodes)} nodes joined")
            out = subprocess.run(["ray", "status", f"--address={self.address}"], capture_output=True, text=True, env=self.env)
            joined = count_nodes(out.stdout) if out.returncode == 0 else 0
            if joined >= n:
                logger.info("Ray cluster at %s: %d nodes active", self.address, joined)
                return joined
            if time.monotonic() >= deadline:
                raise RayLaunchError(
                    f"only {joined} of {n} nodes joined the Ray cluster at {self.address} within "
                    f"{self.settings.start_timeout_s:.0f} s (nodes: {', '.join(self.nodes)}); check the network "
                    "interface (RAY_NETWORK_INTERFACE) and that the nodes can reach the head"
                )
            time.sleep(self.settings.poll_s)

    def stop(self) -> None:
        """``ray stop --force`` on every node, then end the ``ray start`` steps; never raises."""
        for node in self.nodes:
            try:
                subprocess.run(on_node(node, ["ray", "stop", "--force"], overlap=True), env=self.env,
                               timeout=self.settings.stop_timeout_s, capture_output=True)
            except (OSError, subprocess.SubprocessError) as err:
                logger.warning("ray stop on %s failed: %s", node, err)
        for node, step in self.steps.items():
            if step.poll() is None:
                step.terminate()
                try:
                    step.wait(timeout=self.settings.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    step.kill()
                    step.wait()

    def run_on_head(self, command: Sequence[str], *, cwd=None, env: Mapping[str, str] | None = None) -> int:
        """Run ``command`` on the head node attached to this cluster; its exit status."""
        step_env = {**self.env, **(env or {}), "RAY_ADDRESS": self.address}
        step_env = self.settings.node_env(step_env)
        return subprocess.run(on_node(self.nodes[0], command, overlap=True), cwd=cwd, env=step_env).returncode

    def __enter__(self) -> "RayCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated(signal.Signals(signum).name)


def run_command(command: Sequence[str], *, nnodes: int, settings: RaySettings | None = None, cwd=None,
                env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` (verl's trainer) with Ray on ``nnodes`` nodes; its exit status.

    One node: the command runs here and makes its own local Ray cluster. More: the allocation
    must have exactly ``nnodes`` nodes; Ray is started across them and stopped afterwards,
    also when the command fails or the job receives SIGTERM (then the status is 143)."""
    env = dict(os.environ if env is None else env)
    if nnodes == 1:
        if settings is not None:
            env = settings.node_env(env)
        return subprocess.run(list(command), cwd=cwd, env=env).returncode
    nodes = node_list(env)
    if len(nodes) != nnodes:
        raise RayLaunchError(f"the run needs {nnodes} nodes, the allocation has {len(nodes)}: {', '.join(nodes)}")
    settings = settings or RaySettings.from_env(env)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with RayCluster(nodes, settings, env) as cluster:
            return cluster.run_on_head(command, cwd=cwd)
    except _Terminated as sig:
        logger.warning("received %s: Ray stopped on every node", sig)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offprincipal.training.ray_slurm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-cpus", type=int, help="CPUs per node for Ray (default: SLURM_CPUS_PER_TASK)")
    parser.add_argument("--num-gpus", type=int, help="GPUs per node for Ray (default: SLURM_GPUS_ON_NODE)")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every node to join")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between two `ray status` checks")
    parser.add_argument("--nnodes", type=int, help="nodes to use (default: SLURM_JOB_NUM_NODES, else 1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run on the head")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env = dict(os.environ)
    nnodes = args.nnodes or int(env.get("SLURM_JOB_NUM_NODES", "1"))
    settings = None
    if nnodes > 1:
        kwargs = {k: v for k, v in (("num_cpus", args.num_cpus), ("num_gpus", args.num_gpus)) if v is not None}
        settings = RaySettings.from_env(env, port=args.port, start_timeout_s=args.timeout, poll_s=args.poll, **kwargs)
    return run_command(command, nnodes=nnodes, settings=settings, env=env)


if __name__ == "__main__":
    sys.exit(main())
