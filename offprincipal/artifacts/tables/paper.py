"""Table renderers: Table 1 (bf16 update sparsity), Table 2 (cross-run Jaccard in one block),
Tables 4 and 5 (sparse RL with fixed masks: held-out accuracy at the final / an intermediate
checkpoint).

Each returns two frames: the CSV one at full precision (machine-readable column names) and
the Markdown one for reading (display names, percentages rounded to 2 decimals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offprincipal.artifacts.data import accuracy as acc
from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_csv
from offprincipal.artifacts.data.crossrun import jaccard_rows
from offprincipal.artifacts.data.runs import (
    ADAPTER_NAMES,
    PROJ_KINDS,
    checkpoint_step,
    mask_text,
    read_runs,
    read_updates,
    sparsity,
)
from offprincipal.checkpoints.naming import classify
from offprincipal.metrics.masks import MaskFile, popcount
from offprincipal.training.run_directory import MASK_FILE

UPDATE_COLUMNS = ("name", "numel", "base_dtype", "ft_dtype", "changed_eta", "changed_abs")


def _dtypes(series: pd.Series) -> str:
    return "+".join(sorted(str(x) for x in series.dropna().unique()))


def table1(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per pair: sparsity = 1 - changed/total over all stored parameters (as the paper
    counts), by the η rule and by the absolute-tolerance rule."""
    eta = ctx.metrics.get("eta", 1e-3)
    atol = ctx.metrics.get("abs_tolerance", 1e-5)
    rows = []
    for pid, path in zip(ctx.pair_ids, ctx.files("updates")):
        df = read_csv(ctx.name, path, UPDATE_COLUMNS, "per-tensor updates")
        for c in ("numel", "changed_eta", "changed_abs"):
            if df[c].isna().any():
                raise ArtifactInputError(f"{ctx.name}: input file {path} (per-tensor updates) has empty {c!r} values")
        total = int(df["numel"].sum())
        if total <= 0:
            raise ArtifactInputError(f"{ctx.name}: input file {path} (per-tensor updates) counts no parameters")
        changed_eta = int(df["changed_eta"].sum())
        changed_abs = int(df["changed_abs"].sum())
        s_eta = 100.0 * (1.0 - changed_eta / total)
        s_abs = 100.0 * (1.0 - changed_abs / total)
        pair = ctx.pairs[pid]
        notes = sorted({str(n) for n in df["note"].dropna() if str(n).strip()}) if "note" in df.columns else []
        rows.append(
            {
                "pair": pid,
                "label": pair.get("label", pid),
                "algorithm": pair.get("algorithm", ""),
                "data": pair.get("data", ""),
                "kind": pair.get("kind", ""),
                "n_tensors": len(df),
                "numel": total,
                "stored_dtypes": f"{_dtypes(df['base_dtype'])} → {_dtypes(df['ft_dtype'])}",
                "changed_eta": changed_eta,
                "changed_abs": changed_abs,
                "sparsity_eta_pct": s_eta,
                "sparsity_abs_pct": s_abs,
                "abs_minus_eta_pct": s_abs - s_eta,
                "paper_sparsity_pct": pair.get("paper_sparsity", np.nan),
                "notes": "; ".join(notes),
            }
        )
    table = pd.DataFrame(rows)
    table["paper_sparsity_pct"] = table["paper_sparsity_pct"].astype(float)

    md = pd.DataFrame(
        {
            "fine-tuned checkpoint (base → fine-tuned)": table["label"],
            "algorithm": table["algorithm"],
            "data": table["data"],
            "kind": table["kind"],
            "parameters": table["numel"].map(lambda n: f"{n:,}"),
            "stored dtype": table["stored_dtypes"],
            f"sparsity, η = {eta:g} (%)": table["sparsity_eta_pct"].map(_pct),
            f"sparsity, abs(Δw) ≤ {atol:g} (%)": table["sparsity_abs_pct"].map(_pct),
            "difference (pp)": table["abs_minus_eta_pct"].map(_pct),
            "paper (%)": table["paper_sparsity_pct"].map(_pct),
        }
    )
    if table["notes"].str.len().gt(0).any():
        md["notes"] = table["notes"]
    return table, md


def _pct(v) -> str:
    return "" if pd.isna(v) else f"{v:.2f}"


def _num(v, digits: int = 4) -> str:
    return "" if pd.isna(v) else f"{v:.{digits}f}"


def table2(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise Jaccard rows in the order of the spec's runs, then their mean."""
    table = jaccard_rows(ctx)

    def lab(pid):
        return ctx.pairs[pid].get("label", pid) if pid in ctx.pairs else pid

    md = pd.DataFrame(
        {
            "run A": table["run_a"].map(lab),
            "run B": table["run_b"].map(lambda p: lab(p) if p else ""),
            "Jaccard (pooled)": table["jaccard_pooled"].map(_num),
            "baseline (pooled)": table["baseline_pooled"].map(_num),
            "Jaccard / baseline": table["ratio_pooled"].map(lambda v: _num(v, 2)),
            "Jaccard (mean over matrices)": table["jaccard_mean"].map(_num),
            "baseline (mean)": table["baseline_mean"].map(_num),
            "layer": table["layer"].map(lambda v: "all" if pd.isna(v) else str(int(v))),
        }
    )
    return table, md


# ---------------------------------------------------------------------------- Tables 4 and 5


def _trainable(ctx: Context, run, updates: pd.DataFrame) -> tuple[float, float, str]:
    """Share and number of q/k/v/o/gate/up/down entries the run could change: Σ mask over its
    ``masks.npz`` for masked runs, every projection entry for dense runs, NaN for adapter runs;
    and the share's display text."""
    proj_numel = int(updates.loc[updates["kind"].isin(PROJ_KINDS), "numel"].sum())
    if run.adapter != "none":
        return float("nan"), float("nan"), f"{ADAPTER_NAMES.get(run.adapter, run.adapter)} rank {run.rank}"
    if run.mask == "none":
        return 1.0, float(proj_numel), "all"
    path = run.path / MASK_FILE
    if not path.is_file():
        raise ArtifactInputError(f"{ctx.name}: input file {path} (trainable-entry masks of a {run.mask!r}-masked run) "
                                 "does not exist")
    on = total = 0
    with MaskFile(path) as mf:
        for name in mf.names:
            if classify(name).kind in PROJ_KINDS:
                on += popcount(mf.bits(name))
                total += int(np.prod(mf.shape(name)))
    if total == 0:
        raise ArtifactInputError(f"{ctx.name}: input file {path} (trainable-entry masks) holds no projection masks")
    if total != proj_numel:
        raise ArtifactInputError(f"{ctx.name}: input file {path} masks {total} projection entries, the pair's "
                                 f"updates count {proj_numel}")
    share = on / total
    return share, float(on), f"{100 * share:.2f}"


def _accuracy_columns(prefix: str, acc) -> dict:
    return {f"{prefix}": acc.value, f"{prefix}_lo": acc.lo, f"{prefix}_hi": acc.hi}


def _difference_columns(prefix: str, d) -> dict:
    if d is None:
        return {prefix: np.nan, f"{prefix}_lo": np.nan, f"{prefix}_hi": np.nan}
    return {prefix: d.diff, f"{prefix}_lo": d.lo, f"{prefix}_hi": d.hi}


def _task_keys(result: dict) -> list[str]:
    """The suite's tasks and, for several, the average (the paper's last accuracy column)."""
    tasks = acc.tasks_of(result)
    return tasks + ([acc.AVERAGE] if len(tasks) > 1 else [])


def _acc_text(table: pd.DataFrame, col: str) -> pd.Series:
    return table.apply(lambda r: "" if pd.isna(r[col]) else
                       f"{100 * r[col]:.1f} [{100 * r[col + '_lo']:.1f}, {100 * r[col + '_hi']:.1f}]", axis=1)


def _diff_text(table: pd.DataFrame, col: str) -> pd.Series:
    return table.apply(lambda r: "" if pd.isna(r[col]) else
                       f"{100 * r[col]:+.1f} [{100 * r[col + '_lo']:+.1f}, {100 * r[col + '_hi']:+.1f}]", axis=1)


def masked_runs_table(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 4 and 5: the base(s), then per pair its run's mask, trainable entries, update
    sparsity and pass@1 (avg@k) per task of the suite with 95% intervals, and the paired
    difference to the reference (dense) run and to the base (at the pair's checkpoint: final
    for Table 4, an intermediate step for Table 5)."""
    pids = ctx.pair_ids
    runs = read_runs(ctx)
    ft_results = acc.evaluations(ctx, "ft")
    base_results = acc.evaluations(ctx, "base")
    paired = acc.read_paired(ctx)
    keys = _task_keys(ft_results[0])
    ref_pair = ctx.spec.get("reference")
    ref_ckpt = ctx.pairs[ref_pair]["finetuned"] if ref_pair else None
    rows, seen_bases = [], set()
    for pid, result in zip(pids, base_results):
        ckpt = ctx.pairs[pid]["base"]
        if ckpt in seen_bases:
            continue
        seen_bases.add(ckpt)
        row = {"row": "base", "pair": "", "checkpoint": ckpt, "label": f"base ({ckpt})", "run": "", "step": np.nan,
               "mask": "", "adapter": "", "trainable_share": np.nan, "trainable_params": np.nan, "numel": np.nan,
               "changed_eta": np.nan, "update_sparsity_pct": np.nan, "proj_update_sparsity_pct": np.nan,
               "trainable": "", "mask_text": "base"}
        for key in keys:
            row.update(_accuracy_columns(f"acc_{key}", acc.accuracy(result, key)))
            row.update(_difference_columns(f"delta_ref_{key}", None))
            row.update(_difference_columns(f"delta_base_{key}", None))
        rows.append(row)
    for pid, run, result, upd, man in zip(pids, runs, ft_results, ctx.files("updates"), ctx.files("ft_manifests")):
        df = read_updates(ctx, upd)
        share, params, share_text = _trainable(ctx, run, df)
        step = checkpoint_step(ctx, man, run)
        ckpt, base = ctx.pairs[pid]["finetuned"], ctx.pairs[pid]["base"]
        row = {
            "row": "run", "pair": pid, "checkpoint": ckpt, "label": ctx.label(pid),
            "run": run.run_id, "step": step if step is not None else np.nan, "mask": run.mask, "adapter": run.adapter,
            "trainable_share": share, "trainable_params": params, "numel": int(df["numel"].sum()),
            "changed_eta": int(df["changed_eta"].sum()),
            "update_sparsity_pct": 100.0 * sparsity(df),
            "proj_update_sparsity_pct": 100.0 * sparsity(df[df["kind"].isin(PROJ_KINDS)]),
            "trainable": share_text, "mask_text": mask_text(run),
        }
        for key in keys:
            row.update(_accuracy_columns(f"acc_{key}", acc.accuracy(result, key)))
            ref = acc.difference(ctx, paired, ckpt, ref_ckpt, key) if ref_ckpt and ckpt != ref_ckpt else None
            row.update(_difference_columns(f"delta_ref_{key}", ref))
            row.update(_difference_columns(f"delta_base_{key}", acc.difference(ctx, paired, ckpt, base, key)))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["step"] = table["step"].astype("Int64")
    ref_label = ctx.label(ref_pair) if ref_pair else "reference"
    md = {
        "checkpoint": table["label"],
        "step": table["step"].map(lambda v: "" if pd.isna(v) else str(int(v))),
        "mask": table["mask_text"],
        "trainable entries of q/k/v/o/gate/up/down": table.apply(
            lambda r: "" if pd.isna(r["trainable_params"]) else f"{int(r['trainable_params']):,} ({r['trainable']}%)"
            if r["trainable"] not in ("", "all") else f"{int(r['trainable_params']):,} (all)", axis=1),
        "update sparsity (%)": table["update_sparsity_pct"].map(_pct),
    }
    for key in keys:
        md[f"{key} pass@1 (%) [95% CI]"] = _acc_text(table, f"acc_{key}")
        md[f"{key}: Δ vs {ref_label} (pp) [paired 95% CI]"] = _diff_text(table, f"delta_ref_{key}")
    md["Δ vs base (pp) [paired 95% CI]"] = _diff_text(table, f"delta_base_{keys[-1]}")
    table = table.drop(columns=["trainable", "mask_text"])
    return table, pd.DataFrame(md)


table4 = table5 = masked_runs_table


def table1_acc(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per pair: η-rule update sparsity beside the base's and the fine-tune's pass@1 on each task
    of the suite (95% intervals) and the fine-tune's paired gain over its base."""
    ft_results = acc.evaluations(ctx, "ft")
    base_results = acc.evaluations(ctx, "base")
    paired = acc.read_paired(ctx)
    keys = _task_keys(ft_results[0])
    rows = []
    for pid, path, ft_res, base_res in zip(ctx.pair_ids, ctx.files("updates"), ft_results, base_results):
        df = read_updates(ctx, path)
        pair = ctx.pairs[pid]
        row = {"pair": pid, "label": pair.get("label", pid), "algorithm": pair.get("algorithm", ""),
               "kind": pair.get("kind", ""), "base": pair["base"], "finetuned": pair["finetuned"],
               "sparsity_eta_pct": 100.0 * sparsity(df), "paper_sparsity_pct": pair.get("paper_sparsity", np.nan)}
        for key in keys:
            row.update(_accuracy_columns(f"base_acc_{key}", acc.accuracy(base_res, key)))
            row.update(_accuracy_columns(f"ft_acc_{key}", acc.accuracy(ft_res, key)))
            row.update(_difference_columns(f"gain_{key}",
                                           acc.difference(ctx, paired, pair["finetuned"], pair["base"], key)))
        rows.append(row)
    table = pd.DataFrame(rows)
    md = {"pair": table["label"], "algorithm": table["algorithm"],
          "update sparsity (%)": table["sparsity_eta_pct"].map(_pct)}
    for key in keys:
        md[f"{key}: base pass@1 (%)"] = _acc_text(table, f"base_acc_{key}")
        md[f"{key}: fine-tuned pass@1 (%)"] = _acc_text(table, f"ft_acc_{key}")
        md[f"{key}: gain (pp) [paired 95% CI]"] = _diff_text(table, f"gain_{key}")
    return table, pd.DataFrame(md)
