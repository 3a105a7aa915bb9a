"""Readers of the training-run artifacts' inputs (Figs. 3, 6, 9-11, 14, 15, Sec. 2.3, Tables 4-5,
the claims about them): run directories, checkpoint manifests' steps, update sparsity
(evaluations are read by :mod:`offprincipal.artifacts.data.accuracy`).

A run directory follows :mod:`offprincipal.training.run_directory` (both training backends
write it): ``run.json`` (the resolved :class:`~offprincipal.training.RunSpec` under ``spec``),
``metrics.jsonl`` (one JSON row per training step) and, for masked runs, ``masks.npz`` (the
trainable entries).

Every reader raises :class:`~offprincipal.artifacts.data.context.ArtifactInputError` naming the
artifact and the file when an input is missing, unreadable or lacks what is needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_csv, read_json, read_jsonl
from offprincipal.training.run_directory import CKPT_INFO, FINAL, METRICS_FILE, RUN_MANIFEST

#: the projections masks and adapters act on (offprincipal.training.masks.MASK_TARGET_KINDS)
PROJ_KINDS = ("q", "k", "v", "o", "gate", "up", "down")
UPDATE_COLUMNS = ("name", "kind", "numel", "changed_eta")

MASK_NAMES = {
    "none": "dense (no mask)",
    "principal": "principal mask",
    "nonprincipal": "non-principal mask",
    "low": "low-magnitude mask",
    "safe": "safe mask (low ∪ non-principal)",
    "random": "random mask (safe density)",
}
ADAPTER_NAMES = {"lora": "LoRA", "pissa": "PiSSA", "none": "full fine-tuning"}

#: the KL-to-base column a run logged, best first: the TRL backend measures the exact KL, verl
#: (verl.md §7 option A) only the k3 estimator on its update mini-batches
KL_COLUMNS = ("kl", "kl_k3")


@dataclass
class Run:
    """One training run directory, read and checked."""

    run_id: str
    path: Path
    manifest: dict
    spec: dict
    log: pd.DataFrame
    config: dict  # the workflow's config entry of the run ({} when not given)

    @property
    def mask(self) -> str:
        return str(self.spec.get("mask", "none"))

    @property
    def adapter(self) -> str:
        return str(self.spec.get("adapter", "none"))

    @property
    def lr(self) -> float:
        return float(self.spec["lr"])

    @property
    def rank(self) -> int | None:
        return int(self.spec["adapter_rank"]) if self.adapter != "none" else None

    @property
    def steps(self) -> int | None:
        s = self.manifest.get("steps", self.spec.get("steps"))
        return int(s) if s is not None else None

    def column(self, ctx_name: str, *names: str) -> tuple[str, pd.DataFrame]:
        """The first of ``names`` logged by this run, with the rows where it is finite."""
        for n in names:
            if n in self.log.columns:
                rows = self.log[["step", n]].dropna()
                if not rows.empty:
                    return n, rows
        raise ArtifactInputError(
            f"{ctx_name}: input file {self.path / METRICS_FILE} (training log) has no values of "
            f"{' or '.join(repr(n) for n in names)}"
        )


def run_dirs(ctx: Context) -> list[Path]:
    """The ``runs`` inputs: one training run directory per pair, in the spec's order."""
    if "runs" not in ctx.inputs:
        raise ArtifactInputError(f"{ctx.name}: no 'runs' input directories were given (inputs: {sorted(ctx.inputs)})")
    dirs = ctx.inputs["runs"]
    dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
    if len(dirs) != len(ctx.pair_ids):
        raise ArtifactInputError(
            f"{ctx.name}: expected {len(ctx.pair_ids)} 'runs' director(ies) (one per pair {ctx.pair_ids}), "
            f"got {len(dirs)}: {dirs}"
        )
    out = []
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise ArtifactInputError(f"{ctx.name}: input directory {p} (training run) does not exist")
        out.append(p)
    return out


def read_run(ctx: Context, path: Path) -> Run:
    """``run.json`` (with its ``spec``) and ``metrics.jsonl`` of one run directory."""
    manifest = read_json(ctx.name, path / RUN_MANIFEST, "training run manifest")
    spec = manifest.get("spec")
    if not isinstance(spec, dict) or "lr" not in spec:
        raise ArtifactInputError(f"{ctx.name}: input file {path / RUN_MANIFEST} (training run manifest) has no run spec")
    rows = read_jsonl(ctx.name, path / METRICS_FILE, "training log")
    log = pd.DataFrame(rows)
    if "step" not in log.columns or log["step"].isna().any():
        raise ArtifactInputError(f"{ctx.name}: input file {path / METRICS_FILE} (training log) has rows without a 'step'")
    log = log.sort_values("step").reset_index(drop=True)
    runs = getattr(ctx, "runs", None) or {}
    return Run(run_id=path.name, path=path, manifest=manifest, spec=spec, log=log, config=runs.get(path.name, {}))


def read_runs(ctx: Context) -> list[Run]:
    return [read_run(ctx, p) for p in run_dirs(ctx)]


def checkpoint_step(ctx: Context, manifest_path: str | os.PathLike, run: Run | None = None) -> int | None:
    """Training step of a run checkpoint from its manifest (``step``: N or ``"final"``);
    ``final`` is resolved from the checkpoint's own training record, the run's manifest, or
    the run's config. None for checkpoints not saved by a run."""
    m = read_json(ctx.name, manifest_path, "checkpoint manifest")
    step = m.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    if step != FINAL:
        return None
    info = Path(str(m.get("path", ""))) / CKPT_INFO
    if m.get("path") and info.is_file():
        try:
            s = json.loads(info.read_text()).get("step")
            if isinstance(s, int):
                return s
        except json.JSONDecodeError:
            pass
    if run is not None and run.steps is not None:
        return run.steps
    runs = getattr(ctx, "runs", None) or {}
    entry = runs.get(m.get("run")) or (next(iter(runs.values())) if len(runs) == 1 else None)
    if entry and isinstance(entry.get("spec"), dict) and "steps" in entry["spec"]:
        return int(entry["spec"]["steps"])
    return None


def read_updates(ctx: Context, path: str) -> pd.DataFrame:
    df = read_csv(ctx.name, path, UPDATE_COLUMNS, "per-tensor updates")
    for c in ("numel", "changed_eta"):
        if df[c].isna().any():
            raise ArtifactInputError(f"{ctx.name}: input file {path} (per-tensor updates) has empty {c!r} values")
    if int(df["numel"].sum()) <= 0:
        raise ArtifactInputError(f"{ctx.name}: input file {path} (per-tensor updates) counts no parameters")
    return df


def sparsity(df: pd.DataFrame) -> float:
    """Update sparsity, 1 − Σ changed_eta / Σ numel, over the rows of ``df`` (NaN if none)."""
    total = float(df["numel"].sum())
    return 1.0 - float(df["changed_eta"].sum()) / total if total > 0 else float("nan")


def mask_text(run: Run) -> str:
    return MASK_NAMES.get(run.mask, run.mask)


def adapter_text(run: Run) -> str:
    return ADAPTER_NAMES.get(run.adapter, run.adapter)


def lr_text(lr: float) -> str:
    mant, exp = f"{lr:.0e}".split("e")
    return f"{lr:g}" if float(f"{mant}e{exp}") != lr else f"{mant}e{int(exp)}"


def finite(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]
