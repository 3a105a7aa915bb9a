"""The run-directory contract: what a training run leaves behind, whichever backend trained it.

Both backends (:mod:`.trl_backend`, :mod:`.verl_backend`) write, and every reader
(:mod:`offprincipal.artifacts.data.runs`, :mod:`offprincipal.toy.world`, the workflow's checkpoint
rules) reads, a run directory made of:

``run.json`` (:data:`RUN_MANIFEST`)
    The manifest, written last and atomically: a run directory without it is incomplete.
    Its fields are :data:`MANIFEST_FIELDS` (required ones in :data:`REQUIRED_MANIFEST_FIELDS`).
``metrics.jsonl`` (:data:`METRICS_FILE`)
    One JSON object per training step, in step order, no step twice. Columns are named as in
    :data:`METRIC_COLUMNS`; a backend writes those it measures and may add its own (verl's raw
    metric names are kept beside the contract's).
``masks.npz`` (:data:`MASK_FILE`)
    Masked runs only: the trainable entries (:func:`offprincipal.training.masks.save_masks`).
``step_{N}/``, ``final/`` (:func:`checkpoint_dir_name`)
    HF-layout checkpoints (TRL backend). The verl backend's checkpoints are FSDP shards in its
    state directory (manifest ``state_dir``); the workflow merges each saved step into its own
    HF directory (``checkpoint_format`` says which). Every HF checkpoint a run produces carries
    :data:`CKPT_INFO` (``{"step", "algorithm", "base", "dtype", ...}``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

from offprincipal.io import atomic_path, write_json

RUN_MANIFEST = "run.json"
METRICS_FILE = "metrics.jsonl"
MASK_FILE = "masks.npz"
CKPT_INFO = "offprincipal_training.json"
FINAL = "final"

BACKENDS = ("trl", "verl")
#: how a run's checkpoints are stored: HF directories in the run directory (TRL), or verl FSDP
#: shards (``global_step_N/actor``) under ``state_dir`` that the workflow merges to HF
CHECKPOINT_FORMATS = ("hf", "verl_fsdp")

#: metric columns of ``metrics.jsonl`` (a backend leaves out what it does not measure)
METRIC_COLUMNS: dict[str, str] = {
    "step": "training step (1-based); one rollout batch and its optimizer updates",
    "rollout_policy_step": "the step whose policy generated this step's rollouts (step - 1)",
    "updates": "optimizer updates done after this step",
    "loss": "policy-gradient loss (SFT: cross-entropy) of the step",
    "grad_norm": "gradient norm before clipping",
    "lr": "learning rate",
    "reward_mean": "mean reward of the step's rollouts: task reward plus the overlong penalty",
    "task_reward_mean": "mean task reward (+1/-1 verifier) without the overlong penalty",
    "overlong_penalty_mean": "mean overlong penalty (<= 0)",
    "kl": "exact token-wise KL(pi_theta || pi_base) summed over the vocabulary, mean over tokens",
    "kl_k1": "mean log pi_theta(y) - log pi_base(y) on sampled tokens",
    "kl_k3": "mean k3 estimator r - log r - 1, r = pi_base(y)/pi_theta(y), on sampled tokens",
    "entropy": "mean token entropy of pi_theta",
    "response_length_mean": "mean completion length in tokens",
    "response_clip_ratio": "share of completions that hit the length limit",
    "step_seconds": "wall seconds of the step",
    "wall_seconds": "wall seconds since training started (this attempt)",
}

#: manifest fields (``run.json``)
MANIFEST_FIELDS: dict[str, str] = {
    "spec": "the resolved RunSpec (RunSpec.to_dict)",
    "backend": "trl or verl",
    "base": "path of the checkpoint the run started from (for PiSSA: the residual model)",
    "reference_base": "{checkpoint, path, label}: what the analyses compare the run against",
    "checkpoints": "{step: relative path} of the saved steps (the spec's save_steps)",
    "final": "relative path of the final checkpoint",
    "checkpoint_format": "hf or verl_fsdp (CHECKPOINT_FORMATS)",
    "state_dir": "verl: absolute path of the backend's resumable state (FSDP shards, per-attempt logs)",
    "metrics": "file name of the per-step metrics (METRICS_FILE)",
    "kl_estimator": "which KL column(s) this backend measures, against which reference, when",
    "steps": "training steps done",
    "optimizer_updates": "optimizer updates done",
    "mask": "masked runs: {file, kind, density, ...}",
    "adapter": "adapter runs: {kind, rank, alpha, target_modules, init}",
    "versions": "package versions of the training environment",
}
REQUIRED_MANIFEST_FIELDS = ("spec", "backend", "base", "reference_base", "checkpoints", "final", "checkpoint_format", "metrics", "steps")


class RunDirectoryError(ValueError):
    """A run directory breaks the contract; the message names the file and the problem."""


def checkpoint_dir_name(step: int | str) -> str:
    """``step_{N}`` for a saved step, ``final`` for the final checkpoint."""
    if step == FINAL:
        return FINAL
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise RunDirectoryError(f"a checkpoint step is an integer >= 0 or {FINAL!r}, got {step!r}")
    return f"step_{step}"


def reference_base(checkpoint: str | None, path: str | os.PathLike, *, pissa_residual: str | None = None) -> dict:
    """The manifest's ``reference_base``: the ORIGINAL base the analyses compare against.

    For PiSSA the model the adapter was trained on is the residual ``W_res = W0 - principal
    part``, not the base; the label says so, so nobody compares against the residual."""
    label = "original base checkpoint: analyses compare the run's checkpoints against it"
    if pissa_residual is not None:
        label += (
            f"; the PiSSA adapter was trained on the residual model {pissa_residual} "
            "(W_res = W0 - principal part), which is NOT the base to compare against"
        )
    return {"checkpoint": checkpoint, "path": str(path), "label": label}


def write_manifest(run_dir: str | os.PathLike, manifest: Mapping) -> None:
    """Check the required fields and write ``run.json`` atomically."""
    missing = [k for k in REQUIRED_MANIFEST_FIELDS if k not in manifest]
    if missing:
        raise RunDirectoryError(f"{Path(run_dir) / RUN_MANIFEST}: manifest lacks {missing}")
    if manifest["backend"] not in BACKENDS:
        raise RunDirectoryError(f"{Path(run_dir) / RUN_MANIFEST}: backend {manifest['backend']!r} not in {BACKENDS}")
    if manifest["checkpoint_format"] not in CHECKPOINT_FORMATS:
        raise RunDirectoryError(
            f"{Path(run_dir) / RUN_MANIFEST}: checkpoint_format {manifest['checkpoint_format']!r} not in {CHECKPOINT_FORMATS}"
        )
    write_json(Path(run_dir) / RUN_MANIFEST, dict(manifest))


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """``run.json`` of a complete run directory."""
    path = Path(run_dir) / RUN_MANIFEST
    if not path.is_file():
        raise RunDirectoryError(f"{path}: no run manifest (the run did not finish, or {run_dir} is not a run directory)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirectoryError(f"{path}: not JSON: {err}") from None
    missing = [k for k in REQUIRED_MANIFEST_FIELDS if k not in manifest]
    if missing:
        raise RunDirectoryError(f"{path}: manifest lacks {missing}")
    return manifest


def _clean(value):
    """JSON-safe scalar: non-finite floats become null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(path: str | os.PathLike, rows: Iterable[Mapping]) -> list[dict]:
    """Write per-step rows atomically, sorted by step; a step given twice is an error."""
    rows = [dict(r) for r in rows]
    for r in rows:
        step = r.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise RunDirectoryError(f"{path}: every metrics row needs an integer 'step', got {step!r}")
    rows.sort(key=lambda r: r["step"])
    steps = [r["step"] for r in rows]
    dupes = sorted({s for s in steps if steps.count(s) > 1})
    if dupes:
        raise RunDirectoryError(f"{path}: steps {dupes[:5]} appear more than once")
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            for r in rows:
                fh.write(json.dumps({k: _clean(v) for k, v in r.items()}, sort_keys=True) + "\n")
    return rows


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of ``metrics.jsonl``, checked for step order and uniqueness."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{path}: no metrics file")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RunDirectoryError(f"{path}: line {i} is not JSON: {err}") from None
    steps = [r.get("step") for r in rows]
    if steps != sorted(set(steps)):
        raise RunDirectoryError(f"{path}: steps are not strictly increasing")
    return rows
