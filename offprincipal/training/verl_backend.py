"""GPU-cluster training backend: a :class:`~offprincipal.training.spec.RunSpec` run with verl 0.9.1.

:func:`train` launches ``python -m verl.trainer.main_ppo`` with the overrides of
:func:`~offprincipal.training.spec.to_verl_overrides` and leaves a run directory in the
contract of :mod:`offprincipal.training.run_directory`. Two directories per run:

``state_dir``  (resumable, never deleted by the workflow)
    ``checkpoints/`` -- verl's ``trainer.default_local_dir``: ``global_step_N/actor`` FSDP
    shards and ``latest_checkpointed_iteration.txt``, so a rerun resumes
    (``trainer.resume_mode=auto``);
    ``attempts/attempt_NNN.jsonl`` -- verl's ``file`` logger of each attempt (it opens its
    file with mode ``wb``, so one file per attempt keeps what earlier attempts logged);
    ``attempts/attempt_NNN.command.json`` -- the exact command;
    ``mask_reports/attempt_NNN/rank_R.json`` -- masked runs: the plugin's activation records.
``out_dir``  (the run directory, written when training succeeded)
    ``run.json``, ``metrics.jsonl`` (all attempts merged, in step order, the last attempt's
    row for a step that two attempts logged), ``masks.npz`` for masked runs.

Checkpoints stay sharded here; each saved step is merged to a bf16 HF directory by its own
workflow rule (:mod:`offprincipal.training.merge`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping

from offprincipal.io import write_json

from . import ray_slurm
from .run_directory import MASK_FILE, METRICS_FILE, reference_base, write_manifest, write_metrics
from .spec import MASK_PLUGIN, RunSpec, VerlLaunch, check_verl_spec, to_verl_overrides, verl_command

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
ATTEMPTS_DIR = "attempts"
MASK_REPORTS_DIR = "mask_reports"
LATEST = "latest_checkpointed_iteration.txt"

#: verl metric names (verl 0.9.1 v1 trainer) behind each contract column; the first present wins
VERL_METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "loss": ("actor/pg_loss", "actor/actor/pg_loss"),
    "grad_norm": ("actor/grad_norm",),
    "lr": ("actor/lr",),
    "reward_mean": ("critic/score/mean",),
    "kl_k3": ("actor/kl_loss",),
    "entropy": ("actor/entropy",),
    "response_length_mean": ("response_length/mean",),
    "response_clip_ratio": ("response_length/clip_ratio",),
    "step_seconds": ("timing_s/step",),
}


def step_dir(step: int) -> str:
    """Where verl saves training step ``step``, relative to ``state_dir``."""
    return f"{CHECKPOINTS_DIR}/global_step_{step}/actor"


# ---------------------------------------------------------------------------- metrics


def read_attempt_log(path: str | os.PathLike) -> list[dict]:
    """verl ``file`` logger lines ``{"step": N, "data": {...}}`` of one attempt. A truncated
    last line (the attempt was killed mid-write) is dropped; any other bad line is an error."""
    lines = Path(path).read_text().splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                logger.warning("%s: dropping a truncated last line", path)
                continue
            raise ValueError(f"{path}: line {i} is not JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("step"), int) or not isinstance(obj.get("data"), dict):
            raise ValueError(f"{path}: line {i} is not a verl file-logger record {{'step': int, 'data': {{...}}}}")
        out.append(obj)
    return out


def contract_row(step: int, data: Mapping, *, updates_per_step: int, attempt: str) -> dict:
    """One ``metrics.jsonl`` row: the contract's columns from verl's names, verl's raw names beside."""
    row = {"step": step, "rollout_policy_step": step - 1, "updates": step * updates_per_step, "attempt": attempt}
    for column, names in VERL_METRIC_COLUMNS.items():
        for name in names:
            if name in data:
                row[column] = data[name]
                break
    for key, value in data.items():
        if isinstance(value, (int, float, bool, str)) or value is None:
            row.setdefault(key, value)
    return row


def merge_attempt_logs(paths: Iterable[str | os.PathLike], *, updates_per_step: int, steps: int) -> list[dict]:
    """Rows of every attempt (in attempt order) merged by step: a step logged again by a later
    attempt (it resumed from an earlier checkpoint) takes the later attempt's row, whose
    trajectory is the one the saved weights come from. Steps beyond ``steps`` are refused."""
    by_step: dict[int, dict] = {}
    for path in paths:
        for rec in read_attempt_log(path):
            step = rec["step"]
            if not 1 <= step <= steps:
                raise ValueError(f"{path}: step {step} outside the run's 1..{steps}")
            by_step[step] = contract_row(step, rec["data"], updates_per_step=updates_per_step, attempt=Path(path).stem)
    return [by_step[s] for s in sorted(by_step)]


# ---------------------------------------------------------------------------- checks before and after


def check_mask_file(mask_file: str | os.PathLike, base_dir: str | os.PathLike) -> dict:
    """Every mask names a parameter of the base with its shape (fails before any GPU is used)."""
    from offprincipal.checkpoints.reader import Checkpoint
    from offprincipal.metrics.masks import MaskFile

    with MaskFile(Path(mask_file)) as mf, Checkpoint(base_dir) as ckpt:
        names = set(ckpt.names())
        missing = [n for n in mf.names if n not in names]
        if missing:
            raise ValueError(f"mask file {mask_file}: tensors not in the base {base_dir}: {missing[:3]}")
        wrong = [n for n in mf.names if tuple(mf.shape(n)) != tuple(ckpt.shape(n))]
        if wrong:
            raise ValueError(f"mask file {mask_file}: shapes differ from the base {base_dir} for {wrong[:3]}")
        return {"tensors": len(mf.names)}


def check_mask_reports(report_dir: Path, *, world_size: int, tensors: int) -> list[dict]:
    """The plugin's records: one per rank, each masking every tensor of the mask file."""
    reports = [json.loads(p.read_text()) for p in sorted(report_dir.glob("rank_*.json"))] if report_dir.is_dir() else []
    if len(reports) != world_size:
        raise RuntimeError(
            f"masked run: {len(reports)} of {world_size} ranks recorded an active mask plugin in {report_dir}; "
            "the run may have trained dense weights -- its checkpoints are not used"
        )
    bad = [r for r in reports if r.get("tensors") != tensors]
    if bad:
        raise RuntimeError(f"masked run: ranks {[r.get('rank') for r in bad]} masked a different number of tensors than {tensors}")
    return reports


def check_pissa_dir(pissa_dir: Path, spec: RunSpec) -> Path:
    """The offline PiSSA init (:mod:`.pissa`): residual model + ``pissa_init`` with the spec's r, alpha."""
    from .pissa import ADAPTER_DIR

    adapter = pissa_dir / ADAPTER_DIR
    cfg_path = adapter / "adapter_config.json"
    if not cfg_path.is_file() or not (pissa_dir / "config.json").is_file():
        raise FileNotFoundError(f"PiSSA init {pissa_dir}: needs the residual model (config.json) and {ADAPTER_DIR}/adapter_config.json")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("r") != spec.adapter_rank or float(cfg.get("lora_alpha", 0)) != float(spec.adapter_alpha):
        raise ValueError(
            f"PiSSA init {adapter}: r={cfg.get('r')}, lora_alpha={cfg.get('lora_alpha')}; the run needs "
            f"r={spec.adapter_rank}, lora_alpha={spec.adapter_alpha}"
        )
    return adapter


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("verl", "torch", "transformers", "vllm", "peft"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed here (e.g. vllm in a CPU test env)
            out[mod] = None
    return out


# ---------------------------------------------------------------------------- entry


def next_attempt(state_dir: Path) -> str:
    done = sorted((state_dir / ATTEMPTS_DIR).glob("attempt_*.jsonl"))
    return f"attempt_{len(done) + 1:03d}"


def build_overrides(
    spec: RunSpec,
    *,
    model_path: str | os.PathLike,
    train_files: list[str],
    state_dir: str | os.PathLike,
    experiment_name: str,
    attempt: str,
    resources: Mapping | None = None,
    mask_path: str | os.PathLike | None = None,
    pissa_adapter_path: str | os.PathLike | None = None,
) -> tuple[list[str], VerlLaunch]:
    """The overrides of one attempt (no file is read: the checks are :func:`prepare`'s)."""
    state_dir = Path(state_dir).absolute()
    extra = {}
    if spec.mask != "none":
        extra = {"mask_plugin": MASK_PLUGIN, "mask_path": str(Path(mask_path).absolute()) if mask_path else None}
    if spec.adapter == "pissa" and pissa_adapter_path:
        extra["pissa_adapter_path"] = str(Path(pissa_adapter_path).absolute())
    res = dict(resources or {})
    launch = VerlLaunch(
        model_path=str(Path(model_path).absolute()),
        train_files=tuple(str(Path(f).absolute()) for f in train_files),
        reward_path=str(Path(__file__).with_name("verl_reward.py")),
        output_dir=str(state_dir / CHECKPOINTS_DIR),
        metrics_path=str(state_dir / ATTEMPTS_DIR / f"{attempt}.jsonl"),
        experiment_name=experiment_name,
        mask_report_dir=str(state_dir / MASK_REPORTS_DIR / attempt) if spec.mask != "none" else None,
        **{k: res[k] for k in RESOURCE_KEYS if k in res},
    )
    return to_verl_overrides(spec, launch=launch, **extra), launch


#: the run config's ``verl`` block (VerlLaunch fields)
RESOURCE_KEYS = ("nnodes", "n_gpus_per_node", "rollout_tensor_parallel", "gpu_memory_utilization", "sequence_parallel")


def prepare(
    spec: RunSpec,
    base_dir: str | os.PathLike,
    state_dir: str | os.PathLike,
    *,
    train_files: list[str],
    experiment_name: str,
    resources: Mapping | None = None,
    mask_file: str | os.PathLike | None = None,
    pissa_dir: str | os.PathLike | None = None,
    attempt: str | None = None,
    extra_overrides: tuple[str, ...] = (),
) -> tuple[str, list[str], VerlLaunch]:
    """``(attempt, overrides, launch)`` of the next attempt, after the checks that can fail
    before any GPU is used (spec, data files, mask file against the base, PiSSA init against the spec)."""
    spec = check_verl_spec(spec)
    state_dir = Path(state_dir).absolute()
    attempt = attempt or next_attempt(state_dir)
    missing = [f for f in train_files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{experiment_name}: training data {missing} not found")
    model_path, adapter = Path(base_dir), None
    if spec.mask != "none":
        if mask_file is None:
            raise ValueError(f"mask={spec.mask!r} needs a mask_file (the workflow computes it from the base)")
        check_mask_file(mask_file, base_dir)
    if spec.adapter == "pissa":
        if pissa_dir is None:
            raise ValueError("adapter='pissa' needs pissa_dir (the offline residual model + pissa_init)")
        model_path, adapter = Path(pissa_dir), check_pissa_dir(Path(pissa_dir), spec)
    overrides, launch = build_overrides(
        spec, model_path=model_path, train_files=train_files, state_dir=state_dir, experiment_name=experiment_name,
        attempt=attempt, resources=resources, mask_path=mask_file, pissa_adapter_path=adapter,
    )
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    clash = [o for o in extra_overrides if o.split("=", 1)[0].lstrip("+") in given]
    if clash:
        raise ValueError(f"extra overrides {clash} would replace what the run specification sets")
    return attempt, [*overrides, *extra_overrides], launch


def train(
    spec: RunSpec,
    base_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    state_dir: str | os.PathLike,
    train_files: list[str],
    experiment_name: str,
    resources: Mapping | None = None,
    base_checkpoint: str | None = None,
    mask_file: str | os.PathLike | None = None,
    pissa_dir: str | os.PathLike | None = None,
    python: str = sys.executable,
    extra_overrides: tuple[str, ...] = (),
    ray: Mapping | None = None,
) -> dict:
    """Run (or resume) one verl run and write its run directory; returns the manifest.

    A run whose state already holds its last step's checkpoint (an earlier attempt trained to
    the end, then the job died before the run directory was written) launches nothing: only
    the run directory is written.

    ``extra_overrides``: verl keys the specification does not set (e.g. ``trainer.rollout_data_dir``
    for a smoke test); one that would change what the specification sets is refused.
    ``ray``: multi-node runs (``nnodes > 1``, inside a SLURM allocation): ``num_cpus`` per node
    (default: SLURM's), ``start_timeout_s``, ``poll_s`` and ``network`` (``RAY_NETWORK_INTERFACE``,
    ``NCCL_SOCKET_IFNAME``, ``GLOO_SOCKET_IFNAME``; the environment wins) of
    :mod:`offprincipal.training.ray_slurm`."""
    spec = check_verl_spec(spec)
    state_dir, out_dir = Path(state_dir).absolute(), Path(out_dir)
    previous = sorted((state_dir / ATTEMPTS_DIR).glob("attempt_*.jsonl"))
    if previous and last_checkpointed_step(state_dir) == spec.steps:
        attempt, _, launch = prepare(
            spec, base_dir, state_dir, train_files=train_files, experiment_name=experiment_name, resources=resources,
            mask_file=mask_file, pissa_dir=pissa_dir, attempt=previous[-1].stem, extra_overrides=tuple(extra_overrides),
        )
        logger.info("%s: verl already checkpointed step %d of %d; writing the run directory only",
                    experiment_name, spec.steps, spec.steps)
        return finish(spec, base_dir, out_dir, state_dir, base_checkpoint=base_checkpoint, mask_file=mask_file,
                      pissa_dir=pissa_dir, launch=launch, attempt=attempt, seconds=None)
    attempt, overrides, launch = prepare(
        spec, base_dir, state_dir, train_files=train_files, experiment_name=experiment_name,
        resources=resources, mask_file=mask_file, pissa_dir=pissa_dir, extra_overrides=tuple(extra_overrides),
    )
    (state_dir / ATTEMPTS_DIR).mkdir(parents=True, exist_ok=True)
    command = verl_command(overrides, python=python)
    write_json(state_dir / ATTEMPTS_DIR / f"{attempt}.command.json", {"command": command, "cwd": str(state_dir)})
    logger.info("verl attempt %s: %s", attempt, " ".join(command))
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    status = ray_slurm.run_command(command, nnodes=launch.nnodes, settings=ray_settings(launch, ray, env), cwd=state_dir, env=env)
    seconds = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(
            f"verl attempt {attempt} of {experiment_name} exited with status {status} after {seconds:.0f} s; "
            f"its metrics are in {launch.metrics_path}; rerun to resume from the last checkpoint in {launch.output_dir}"
        )
    return finish(spec, base_dir, out_dir, state_dir, base_checkpoint=base_checkpoint, mask_file=mask_file,
                  pissa_dir=pissa_dir, launch=launch, attempt=attempt, seconds=seconds)


def ray_settings(launch: VerlLaunch, ray: Mapping | None, env: Mapping[str, str]) -> ray_slurm.RaySettings:
    """The Ray launcher's settings of a run. One node starts no Ray of ours (verl's ray.init()
    makes a local cluster), so only its NCCL/Gloo interfaces matter there."""
    ray = dict(ray or {})
    kwargs = {"num_gpus": launch.n_gpus_per_node}
    if ray.get("num_cpus"):
        kwargs["num_cpus"] = int(ray["num_cpus"])
    elif launch.nnodes == 1:
        kwargs["num_cpus"] = 1  # unused
    for key in ("start_timeout_s", "poll_s"):
        if ray.get(key):
            kwargs[key] = float(ray[key])
    return ray_slurm.RaySettings.from_env(env, defaults=dict(ray.get("network") or {}), **kwargs)


def last_checkpointed_step(state_dir: str | os.PathLike) -> int:
    """verl's ``latest_checkpointed_iteration.txt`` in ``state_dir`` (0: no checkpoint yet)."""
    latest = Path(state_dir) / CHECKPOINTS_DIR / LATEST
    return int(latest.read_text().strip()) if latest.is_file() else 0


def finish(spec, base_dir, out_dir, state_dir, *, base_checkpoint, mask_file, pissa_dir, launch: VerlLaunch,
           attempt: str, seconds: float | None = None) -> dict:
    """Check what verl left in ``state_dir`` and write the run directory (manifest last)."""
    spec = check_verl_spec(spec)
    state_dir, out_dir = Path(state_dir), Path(out_dir)
    latest = state_dir / CHECKPOINTS_DIR / LATEST
    done = last_checkpointed_step(state_dir)
    if done != spec.steps:
        raise RuntimeError(f"{latest}: verl's last checkpoint is step {done}, the run has {spec.steps} steps")
    wanted = sorted({*[s for s in spec.save_steps if s > 0], spec.steps})
    missing = [s for s in wanted if not (state_dir / step_dir(s) / "fsdp_config.json").is_file()]
    if missing:
        raise RuntimeError(f"{state_dir}: verl saved no shards for steps {missing} (save_freq must divide them)")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_mask = None
    if spec.mask != "none":
        info = check_mask_file(mask_file, base_dir)
        world = launch.nnodes * launch.n_gpus_per_node
        reports = check_mask_reports(Path(launch.mask_report_dir), world_size=world, tensors=info["tensors"])
        shutil.copyfile(mask_file, out_dir / MASK_FILE)
        manifest_mask = {"file": MASK_FILE, "kind": spec.mask, "plugin": MASK_PLUGIN, "tensors": info["tensors"],
                         "density": reports[0].get("density"), "ranks_reporting": len(reports),
                         "frozen_outside_mask": "every other parameter (embeddings, norms) is frozen"}
    logs = sorted((state_dir / ATTEMPTS_DIR).glob("attempt_*.jsonl"))
    rows = merge_attempt_logs(logs, updates_per_step=spec.updates_per_step, steps=spec.steps)
    if [r["step"] for r in rows] != list(range(1, spec.steps + 1)):
        have = [r["step"] for r in rows]
        raise RuntimeError(f"{state_dir / ATTEMPTS_DIR}: the attempts logged steps {have[:3]}...{have[-3:]}, not 1..{spec.steps}")
    write_metrics(out_dir / METRICS_FILE, rows)
    pissa = Path(pissa_dir).absolute() if spec.adapter == "pissa" else None
    kl_reference = (
        f"the PiSSA residual model {pissa} (verl's reference is the actor with the adapter off), NOT the original base"
        if pissa else "the actor with the adapter off, i.e. the base" if spec.adapter == "lora" else "the base checkpoint"
    )
    manifest = {
        "spec": spec.to_dict(),
        "backend": "verl",
        "base": str(pissa or Path(base_dir).absolute()),
        "reference_base": reference_base(base_checkpoint, Path(base_dir).absolute(), pissa_residual=str(pissa) if pissa else None),
        "checkpoint_format": "verl_fsdp",
        "state_dir": str(state_dir.absolute()),
        "checkpoints": {str(s): step_dir(s) for s in sorted(s for s in spec.save_steps if s > 0)},
        "final": step_dir(spec.steps),
        "metrics": METRICS_FILE,
        "steps": spec.steps,
        "optimizer_updates": spec.steps * spec.updates_per_step,
        "attempts": [p.stem for p in logs],
        "last_attempt": attempt,
        "last_attempt_seconds": seconds,
        "kl_estimator": {
            "kl_k3": "verl actor/kl_loss with kl_loss_type=low_var_kl (k3, clamped to [-10, 10]) and kl_loss_coef=0: "
            "token-mean over each mini-batch of the current policy against the reference, averaged over the step's updates",
            "kl": "not measured by verl (no exact KL over the vocabulary)",
            "reference": kl_reference,
        } if spec.log_kl else {"reference": None},
        "versions": _versions(),
    }
    if manifest_mask:
        manifest["mask"] = manifest_mask
    if spec.adapter != "none":
        manifest["adapter"] = {
            "kind": spec.adapter, "rank": spec.adapter_rank, "alpha": spec.adapter_alpha,
            "target_modules": list(spec.adapter_target_modules),
            "init": f"offline peft PiSSA ({pissa})" if pissa else "verl/peft default (B = 0)",
            "checkpoints": "the workflow folds the fp32 adapter of each saved step into the weights it was trained on",
        }
    write_manifest(out_dir, manifest)
    return manifest
