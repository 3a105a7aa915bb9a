"""Tables of the UV-restoration family (Jin et al., arXiv 2508.16546), one per experiment:
the numbers of the ``restore_topk`` / ``restore_layers``, ``rotation_profile`` and
``sft_then_rl`` figures (:mod:`offprincipal.artifacts.data.restoration`), as a CSV at full precision
and a Markdown table for reading (pass@1 and differences in percent, 95% intervals)."""

from __future__ import annotations

import math

import pandas as pd

from offprincipal.artifacts.data.context import Context
from offprincipal.artifacts.data.restoration import restoration_rows, rotation_summary, sft_then_rl_rows


def _ci(v: float, lo: float, hi: float, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    f = "+.1f" if signed else ".1f"
    return f"{100 * v:{f}} [{100 * lo:{f}}, {100 * hi:{f}}]"


def _share(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f}%"


def _recipe(r) -> str:
    if r.role == "base":
        return "base"
    if r.role == "sft":
        return "SFT (nothing restored)"
    return f"top {100 * r.top_p:g}% of singular directions" if r["mode"] == "top_p" else f"{r.layers} quarter of layers"


def restore_table(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(a): base, SFT and each restored checkpoint: ID / OOD pass@1, paired difference from
    SFT, share of the SFT-to-base gap recovered."""
    rows = restoration_rows(ctx)
    display = pd.DataFrame({
        "checkpoint": rows.checkpoint,
        "restored": [_recipe(r) for _, r in rows.iterrows()],
        "ID pass@1 (%)": [_ci(r.id, r.id_lo, r.id_hi) for _, r in rows.iterrows()],
        "OOD pass@1 (%)": [_ci(r.ood, r.ood_lo, r.ood_hi) for _, r in rows.iterrows()],
        "ID vs SFT (pp, paired)": [_ci(r.get("id_vs_sft"), r.get("id_vs_sft_lo"), r.get("id_vs_sft_hi"), True)
                                   for _, r in rows.iterrows()],
        "OOD vs SFT (pp, paired)": [_ci(r.get("ood_vs_sft"), r.get("ood_vs_sft_lo"), r.get("ood_vs_sft_hi"), True)
                                    for _, r in rows.iterrows()],
        "ID recovered": [_share(v) for v in rows.id_recovered],
        "OOD recovered": [_share(v) for v in rows.ood_recovered],
    })
    return rows, display


def rotation_table(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(c): per pair, the mean over matrices and indices of the per-index and window angles and
    of |Δσ/σ|, over all cached indices and over the top quarter, beside ID / OOD pass@1 of the
    pair's fine-tuned checkpoint."""
    table = rotation_summary(ctx)
    display = pd.DataFrame({
        "pair": [f"{ctx.label(p)} ({ctx.pairs[p]['base']} → {ctx.pairs[p]['finetuned']})" for p in table.pair],
        "U angle, top quarter / all (°)": [f"{a:.2f} / {b:.2f}" for a, b in zip(table.left_deg_top_quarter, table.left_deg_all)],
        "V angle, top quarter / all (°)": [f"{a:.2f} / {b:.2f}" for a, b in zip(table.right_deg_top_quarter, table.right_deg_all)],
        "U window angle, top quarter (°)": [f"{a:.2f}" for a in table.left_window_deg_top_quarter],
        "|Δσ/σ|, top quarter / all (%)": [f"{100 * a:.3f} / {100 * b:.3f}" for a, b in
                                          zip(table.abs_rel_sv_change_top_quarter, table.abs_rel_sv_change_all)],
        "ID pass@1 (%)": [_ci(r.id, r.id_lo, r.id_hi) for _, r in table.iterrows()],
        "OOD pass@1 (%)": [_ci(r.ood, r.ood_lo, r.ood_hi) for _, r in table.iterrows()],
    })
    return table, display


def sft_then_rl_table(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(b): per SFT length, ID / OOD pass@1 of base, SFT and RL from it, RL's paired gain and
    the share of the SFT-to-base gap RL recovers."""
    rows = sft_then_rl_rows(ctx)
    display = pd.DataFrame({
        "SFT steps": rows.sft_steps,
        "SFT checkpoint": rows.sft,
        "RL checkpoint": rows.rl,
        **{f"{name} pass@1 (%), base / SFT / RL": [f"{100 * r[f'{s}_base']:.1f} / {100 * r[f'{s}_sft']:.1f} / "
                                                 f"{100 * r[f'{s}_rl']:.1f}" for _, r in rows.iterrows()]
           for s, name in (("id", "ID"), ("ood", "OOD"))},
        "ID gain of RL (pp, paired)": [_ci(r.id_rl_gain, r.id_rl_gain_lo, r.id_rl_gain_hi, True) for _, r in rows.iterrows()],
        "OOD gain of RL (pp, paired)": [_ci(r.ood_rl_gain, r.ood_rl_gain_lo, r.ood_rl_gain_hi, True)
                                        for _, r in rows.iterrows()],
        "OOD recovered by RL": [_share(v) for v in rows.ood_recovered],
    })
    return rows, display


__all__ = ["restore_table", "rotation_table", "sft_then_rl_table"]
