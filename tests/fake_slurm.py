"""Fake SLURM and Ray executables for tests: each logs its argv (one JSON line per call, in call
order, to $FAKE_LOG) and imitates just enough of the real tool.

* ``scontrol show hostnames LIST`` prints $FAKE_HOSTS one per line, ``scontrol show job ID`` a
  job record with NodeList=$FAKE_NODELIST (``scontrol show config``: MinJobAge);
* ``srun [opts] -w NODE CMD...`` runs CMD with FAKE_NODE=NODE;
* ``hostname --ip-address`` / ``ip -4 -o addr show dev IF`` print the node's address
  (10.0.0.<index+1> / 192.168.0.<index+1> for the interface), from FAKE_HOSTS;
* ``ray start ... --block`` marks the node started and blocks until SIGTERM; it exits 1 at
  once on $FAKE_RAY_FAIL; ``ray status`` counts the started nodes except $FAKE_RAY_NEVER_JOIN
  (as idle nodes, the way Ray's autoscaler v2 shows a fresh cluster);
  ``ray stop`` unmarks the node;
* ``sbatch`` prints a new job id (4001, 4002, ...) and runs nothing; ``sacct`` reports every
  submitted job as $FAKE_SACCT_STATE (RUNNING),
  ``sinfo``/``scancel``/``sacctmgr``/``sshare`` do nothing useful.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

SCRIPT = r'''
import json, os, signal, sys, time
from pathlib import Path

tool = os.path.basename(sys.argv[0])
args = sys.argv[1:]
env = os.environ
node = env.get("FAKE_NODE", "")
with open(env["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({"tool": tool, "argv": args, "node": node, "ray_address": env.get("RAY_ADDRESS"),
                         "nccl": env.get("NCCL_SOCKET_IFNAME"), "gloo": env.get("GLOO_SOCKET_IFNAME")}) + "\n")
hosts = env.get("FAKE_HOSTS", "").split()
state = Path(env.get("FAKE_STATE", "/nonexistent"))

if tool == "scontrol":
    if args[:2] == ["show", "hostnames"]:
        print("\n".join(hosts))
    elif args[:2] == ["show", "job"]:
        print(f"JobId={args[-1]} JobName=x ReqNodeList=(null) NodeList={env.get('FAKE_NODELIST', '(null)')} BatchHost={hosts[0]}")
    else:
        print("MinJobAge = 300 sec")
elif tool == "srun":
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-w", "--nodelist"):
            node = args[i + 1]
            i += 2
        else:
            i += 1
    os.environ["FAKE_NODE"] = node
    os.execvp(args[i], args[i:])
elif tool == "hostname":
    print(f"10.0.0.{hosts.index(node) + 1} fe80::1")
elif tool == "ip":
    print(f"3: {args[-1]}    inet 192.168.0.{hosts.index(node) + 1}/24 brd 192.168.0.255 scope global {args[-1]}")
elif tool == "ray":
    if args[0] == "start":
        if node in env.get("FAKE_RAY_FAIL", "").split():
            sys.exit(1)
        state.mkdir(parents=True, exist_ok=True)
        (state / node).touch()
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        while True:
            time.sleep(0.05)
    elif args[0] == "status":
        never = env.get("FAKE_RAY_NEVER_JOIN", "").split()
        up = sorted(p.name for p in state.glob("*") if p.name not in never) if state.is_dir() else []
        if not up:
            sys.exit(1)
        # Ray's autoscaler v2 layout: a fresh cluster's nodes are idle, hand-started ones untyped
        print("======== Autoscaler status: 2026-12-03 06:00:00.000000 ========")
        print("Node status\n---------------------------------------------------------------")
        print(f"Active:\n (no active nodes)\nIdle:\n {len(up)} \nPending:\n (no pending nodes)")
        print("Recent failures:\n (no failures)\n\nResources\n---------------------------------------------------------------")
        print(f"Total Usage:\n 0.0/{64 * len(up)}.0 CPU")
    elif args[0] == "stop":
        (state / node).unlink(missing_ok=True)
elif tool == "sbatch":
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "jobs", "a") as fh:  # one line per submission; its number is the job id
        fh.write("job\n")
    print(4000 + len((state / "jobs").read_text().splitlines()))
elif tool == "sacct":
    n = len((state / "jobs").read_text().splitlines()) if (state / "jobs").exists() else 0
    for j in range(4001, 4001 + n):
        print(f"{j}|{env.get('FAKE_SACCT_STATE', 'RUNNING')}")
elif tool in ("sacctmgr", "sshare"):
    print("acct42")
'''

TOOLS = ("scontrol", "srun", "hostname", "ip", "ray", "sbatch", "sacct", "squeue", "sinfo", "scancel", "sacctmgr", "sshare")


def install(bin_dir: Path, tools=TOOLS) -> Path:
    """Write the fake tools into ``bin_dir``; put it first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    source = f"#!{sys.executable}\n{SCRIPT}"
    for tool in tools:
        path = bin_dir / tool
        path.write_text(source)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


def fake_env(tmp_path: Path, hosts: list[str], **extra) -> dict:
    bin_dir = install(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls.jsonl"),
           "FAKE_HOSTS": " ".join(hosts), "FAKE_STATE": str(tmp_path / "ray_nodes")}
    for key in ("RAY_NETWORK_INTERFACE", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "RAY_ADDRESS"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env
