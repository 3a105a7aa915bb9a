"""The Ray-on-SLURM launcher against fake srun/scontrol/ray executables that log their argv:
the node list, the order of starts, the wait for every node, the teardown on failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_slurm import fake_env, read_log
from offprincipal.training.ray_slurm import (
    RayLaunchError,
    RaySettings,
    count_nodes,
    main,
    node_list,
    run_command,
)

HOSTS = ["gpu-a01", "gpu-a02", "gpu-b07"]
NODELIST = "gpu-a[01-02],gpu-b07"


def trainer(status: int) -> list[str]:
    """A stand-in for verl's trainer: logs where it ran and with which Ray address."""
    code = ("import json, os, sys; open(os.environ['FAKE_LOG'], 'a').write(json.dumps({'tool': 'trainer', "
            "'node': os.environ.get('FAKE_NODE'), 'ray_address': os.environ.get('RAY_ADDRESS'), "
            "'nccl': os.environ.get('NCCL_SOCKET_IFNAME'), 'gloo': os.environ.get('GLOO_SOCKET_IFNAME')}) + '\\n'); "
            f"sys.exit({status})")
    return [sys.executable, "-c", code]


def settings(**kw) -> RaySettings:
    return RaySettings(num_cpus=kw.pop("num_cpus", 64), num_gpus=kw.pop("num_gpus", 8), start_timeout_s=kw.pop("timeout", 20),
                       poll_s=0.05, stop_timeout_s=10, **kw)


def calls(log, tool, sub=None):
    return [c for c in log if c["tool"] == tool and (sub is None or c["argv"][:1] == [sub])]


def test_node_list_is_one_host_per_element(tmp_path):
    env = fake_env(tmp_path, HOSTS, SLURM_JOB_NODELIST=NODELIST)
    assert node_list(env) == HOSTS
    assert read_log(tmp_path / "calls.jsonl")[0]["argv"] == ["show", "hostnames", NODELIST]
    bare = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    with pytest.raises(RayLaunchError, match="neither SLURM_JOB_NODELIST nor SLURM_JOB_ID is set"):
        node_list(bare)


def test_node_list_from_the_job_record_where_the_jobstep_plugin_removed_it(tmp_path):
    """slurm-jobstep keeps only SLURM_JOB_ID (and a few identity variables) in a rule's environment."""
    env = fake_env(tmp_path, HOSTS, SLURM_JOB_ID="4711", FAKE_NODELIST=NODELIST)
    env.pop("SLURM_JOB_NODELIST", None)
    env.pop("SLURM_NODELIST", None)
    assert node_list(env) == HOSTS
    log = read_log(tmp_path / "calls.jsonl")
    assert [c["argv"] for c in log] == [["show", "job", "--oneliner", "4711"], ["show", "hostnames", NODELIST]]
    env["FAKE_NODELIST"] = "(null)"
    with pytest.raises(RayLaunchError, match="scontrol show job 4711 gave no NodeList"):
        node_list(env)


def test_head_then_workers_then_trainer_on_the_head_then_teardown(tmp_path):
    env = fake_env(tmp_path, HOSTS, SLURM_JOB_NODELIST=NODELIST)
    assert run_command(trainer(0), nnodes=3, settings=settings(), env=env) == 0
    log = read_log(tmp_path / "calls.jsonl")
    sruns = calls(log, "srun")
    # each srun names exactly one node (verl #548 passed them all to -w at once)
    assert all(c["argv"][c["argv"].index("-w") + 1] in HOSTS for c in sruns)
    starts = calls(log, "ray", "start")
    # the head first; the workers start side by side, in no fixed order
    assert starts[0]["node"] == HOSTS[0] and sorted(c["node"] for c in starts[1:]) == HOSTS[1:]
    head = starts[0]["argv"]
    assert "--head" in head and "--node-ip-address=10.0.0.1" in head and "--port=6379" in head
    for c in starts:
        assert "--num-cpus=64" in c["argv"] and "--num-gpus=8" in c["argv"] and "--block" in c["argv"]
    assert all("--address=10.0.0.1:6379" in c["argv"] for c in starts[1:])
    # the ray start steps own their node's resources; the others overlap them
    start_sruns = [c for c in sruns if "ray" in c["argv"] and "start" in c["argv"]]
    assert len(start_sruns) == 3 and not any("--overlap" in c["argv"] for c in start_sruns)
    # the step itself gets the node's CPUs and GPUs (srun would give it one CPU otherwise)
    assert all({"--cpus-per-task=64", "--gres=gpu:8"} <= set(c["argv"][:c["argv"].index("ray")]) for c in start_sruns)
    assert all("--overlap" in c["argv"] for c in sruns if c not in start_sruns)
    order = [(c["tool"], c["argv"][0] if c["tool"] == "ray" else None, c["node"]) for c in log if c["tool"] in ("ray", "trainer")]
    worker_starts = [order.index(("ray", "start", n)) for n in HOSTS[1:]]
    i_head, i_last_start = order.index(("ray", "start", "gpu-a01")), max(worker_starts)
    statuses = [i for i, o in enumerate(order) if o[:2] == ("ray", "status")]
    assert any(i_head < i < min(worker_starts) for i in statuses)  # head up before workers
    i_trainer = order.index(("trainer", None, "gpu-a01"))
    assert any(i_last_start < i < i_trainer for i in statuses)  # every node joined before training
    stops = [i for i, o in enumerate(order) if o[:2] == ("ray", "stop")]
    assert sorted(order[i][2] for i in stops) == sorted(HOSTS) and min(stops) > i_trainer
    assert calls(log, "trainer")[0]["ray_address"] == "10.0.0.1:6379"
    assert not list((tmp_path / "ray_nodes").iterdir())  # every Ray node stopped


def test_a_failing_trainer_still_tears_ray_down_and_passes_its_status(tmp_path):
    env = fake_env(tmp_path, HOSTS[:2], SLURM_JOB_NODELIST="gpu-a[01-02]")
    assert run_command(trainer(3), nnodes=2, settings=settings(), env=env) == 3
    log = read_log(tmp_path / "calls.jsonl")
    assert sorted(c["node"] for c in calls(log, "ray", "stop")) == HOSTS[:2]
    assert not list((tmp_path / "ray_nodes").iterdir())


def test_a_node_that_never_joins_fails_the_launch_after_the_timeout(tmp_path):
    env = fake_env(tmp_path, HOSTS, SLURM_JOB_NODELIST=NODELIST, FAKE_RAY_NEVER_JOIN="gpu-b07")
    with pytest.raises(RayLaunchError, match=r"only 2 of 3 nodes joined the Ray cluster at 10\.0\.0\.1:6379 within 1 s"):
        run_command(trainer(0), nnodes=3, settings=settings(timeout=1), env=env)
    log = read_log(tmp_path / "calls.jsonl")
    assert not calls(log, "trainer")
    assert sorted(c["node"] for c in calls(log, "ray", "stop")) == sorted(HOSTS)
    assert len(calls(log, "ray", "status")) > 2  # it polled
    assert not list((tmp_path / "ray_nodes").iterdir())


def test_a_node_whose_ray_exits_fails_the_launch_naming_it(tmp_path):
    env = fake_env(tmp_path, HOSTS, SLURM_JOB_NODELIST=NODELIST, FAKE_RAY_FAIL="gpu-a02")
    with pytest.raises(RayLaunchError, match=r"Ray exited on gpu-a02 \(status 1\)"):
        run_command(trainer(0), nnodes=3, settings=settings(), env=env)
    log = read_log(tmp_path / "calls.jsonl")
    assert not calls(log, "trainer") and sorted(c["node"] for c in calls(log, "ray", "stop")) == sorted(HOSTS)


def test_network_interfaces_for_multi_nic_clusters(tmp_path):
    env = fake_env(tmp_path, HOSTS[:2], SLURM_JOB_NODELIST="gpu-a[01-02]", RAY_NETWORK_INTERFACE="ib0",
                   NCCL_SOCKET_IFNAME="ib0", SLURM_CPUS_PER_TASK="32", SLURM_GPUS_ON_NODE="4")
    s = RaySettings.from_env(env, defaults={"GLOO_SOCKET_IFNAME": "ib1", "NCCL_SOCKET_IFNAME": "eth9"}, poll_s=0.05)
    assert (s.num_cpus, s.num_gpus, s.ray_interface, s.nccl_socket_ifname, s.gloo_socket_ifname) == (32, 4, "ib0", "ib0", "ib1")
    assert run_command(trainer(0), nnodes=2, settings=s, env=env) == 0
    log = read_log(tmp_path / "calls.jsonl")
    assert [c["node"] for c in calls(log, "ip")] == HOSTS[:2]
    assert calls(log, "ip")[0]["argv"] == ["-4", "-o", "addr", "show", "dev", "ib0"]
    starts = calls(log, "ray", "start")
    assert starts[0]["node"] == "gpu-a01" and "--node-ip-address=192.168.0.1" in starts[0]["argv"]
    assert "--node-ip-address=192.168.0.2" in starts[1]["argv"] and "--address=192.168.0.1:6379" in starts[1]["argv"]
    assert all(c["nccl"] == "ib0" and c["gloo"] == "ib1" for c in starts)
    t = calls(log, "trainer")[0]
    assert (t["nccl"], t["gloo"], t["ray_address"]) == ("ib0", "ib1", "192.168.0.1:6379")


def test_single_node_runs_start_no_ray_cluster(tmp_path):
    env = fake_env(tmp_path, HOSTS[:1], SLURM_JOB_NODELIST="gpu-a01")
    assert run_command(trainer(0), nnodes=1, env=env) == 0
    assert [c["tool"] for c in read_log(tmp_path / "calls.jsonl")] == ["trainer"]


def test_the_allocation_must_match_the_run(tmp_path):
    env = fake_env(tmp_path, HOSTS[:2], SLURM_JOB_NODELIST="gpu-a[01-02]")
    with pytest.raises(RayLaunchError, match="the run needs 4 nodes, the allocation has 2"):
        run_command(trainer(0), nnodes=4, settings=settings(), env=env)


def test_entry_point(tmp_path, monkeypatch):
    env = fake_env(tmp_path, HOSTS[:2], SLURM_JOB_NODELIST="gpu-a[01-02]", SLURM_JOB_NUM_NODES="2",
                   SLURM_CPUS_PER_TASK="16", SLURM_GPUS_ON_NODE="2")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["--timeout", "20", "--poll", "0.05", "--", *trainer(5)]) == 5
    log = read_log(tmp_path / "calls.jsonl")
    assert all("--num-cpus=16" in c["argv"] and "--num-gpus=2" in c["argv"] for c in calls(log, "ray", "start"))
    assert len(calls(log, "ray", "stop")) == 2


def test_sigterm_tears_ray_down_and_ends_the_trainer(tmp_path):
    """Preemption or a time limit: SLURM sends SIGTERM to the job; the launcher stops Ray on
    every node and the trainer before the job's processes are killed."""
    env = fake_env(tmp_path, HOSTS[:2], SLURM_JOB_NODELIST="gpu-a[01-02]", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    code = ("import json, os, time; open(os.environ['FAKE_LOG'], 'a').write(json.dumps({'tool': 'trainer', 'pid': os.getpid()}) + '\\n'); "
            "time.sleep(60); open(os.environ['FAKE_LOG'], 'a').write(json.dumps({'tool': 'trainer-done'}) + '\\n')")
    launcher = subprocess.Popen([sys.executable, "-m", "offprincipal.training.ray_slurm", "--nnodes", "2", "--num-cpus", "4",
                                 "--num-gpus", "1", "--timeout", "20", "--poll", "0.05", "--", sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 30
    while not calls(read_log(tmp_path / "calls.jsonl"), "trainer") and time.monotonic() < deadline:
        time.sleep(0.05)
    started = calls(read_log(tmp_path / "calls.jsonl"), "trainer")
    assert started, "the trainer never started"
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == 143
    log = read_log(tmp_path / "calls.jsonl")
    assert sorted(c["node"] for c in calls(log, "ray", "stop")) == HOSTS[:2]
    assert not list((tmp_path / "ray_nodes").iterdir()) and not calls(log, "trainer-done")
    with pytest.raises(ProcessLookupError):
        os.kill(started[0]["pid"], 0)


def test_count_nodes_reads_both_ray_status_layouts():
    v1 = """======== Autoscaler status: 2026-12-03 06:00:00.123456 ========
Node status
---------------------------------------------------------------
Active:
 1 node_6f0a3e1c2b
 2 node_91bd77aa00
Pending:
 (no pending nodes)
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Usage:
 0.0/192.0 CPU
 0.0/24.0 GPU
"""
    assert count_nodes(v1) == 3
    assert count_nodes(v1.replace(" 2 node_91bd77aa00\n", "")) == 1
    v2 = """======== Autoscaler status: 2026-12-03 06:00:00.123456 ========
Node status
---------------------------------------------------------------
Active:
 1 headgroup
Idle:
 2 
 1 gpu-workers
Pending:
 gpu-workers, 1 launching
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 1.0/96.0 CPU
Total Demands:
 (no resource demands)"""
    assert count_nodes(v2) == 4  # 1 active + 3 idle; the one launching is not there yet
    assert count_nodes("Active:\n (no active nodes)\nIdle:\n (no idle nodes)\nPending:\n") == 0
