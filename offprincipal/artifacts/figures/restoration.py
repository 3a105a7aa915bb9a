"""Figures of the UV-restoration family (Jin et al., "RL Is Neither a Panacea Nor a Mirage",
arXiv 2508.16546): in- and out-of-distribution accuracy of restored SFT checkpoints, rotation
profiles, and RL after SFT of several lengths.

* ``restore_topk`` / ``restore_layers`` — the reference pair's SFT checkpoint and its restored
  variants (top-p of singular directions / a layer quarter; the recipe is read from each
  restored checkpoint's manifest), ID and OOD pass@1 beside the base.
* ``rotation_profile`` — per-index singular-vector angles (``pairs/{pair}/rotation.csv``) and
  per-layer means (``rotation_layers.csv``) of each pair, beside ID / OOD pass@1.
* ``sft_then_rl`` — SFT checkpoints of one run at several lengths and an RL run from each.

ID accuracy is the artifact's ``suite`` (its only task, or the mean over its tasks), OOD the
``ood_suite`` (the mean over its tasks, the evaluation stage's "average" row); intervals are
95% bootstrap over problems, differences paired (``eval/paired/{artifact}.csv`` and
``.ood.csv``). "Recovered" is ``(x - SFT) / (base - SFT)``: the share of the gap between SFT
and base that x closes (NaN where SFT equals the base).

Each figure's numbers come from a ``*_rows`` function of
:mod:`offprincipal.artifacts.data.restoration` (shared with the tables and the claims), which
the tests check against independent computations.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from offprincipal.artifacts.data import accuracy as acc
from offprincipal.artifacts.data.context import Context, read_csv
from offprincipal.artifacts.data.restoration import (
    SIDES,
    recovered,
    restoration_rows,
    rotation_accuracy_rows,
    rotation_curves,
    sft_then_rl_rows,
)
from offprincipal.artifacts.figures.style import colors, finish, integer_layer_axis, new_figure, wrap

BASE_COLOR = "#555555"
SFT_COLOR = "#D55E00"
GROUP_ORDER = ("first", "middle", "last")


def _pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f}%"


# ---------------------------------------------------------------------------- restoration


def _restoration_figure(ctx: Context, order, xlabel: str, label_of):
    rows = restoration_rows(ctx)
    shown = rows[rows.role != "base"].copy()
    shown["order"] = [order(r) for _, r in shown.iterrows()]
    shown = shown.sort_values("order", kind="stable")
    base = rows[rows.role == "base"].iloc[0]
    fig, axes = new_figure(1, 2, panel_w=4.4, panel_h=3.3)
    x = np.arange(len(shown))
    cols = [SFT_COLOR if r == "sft" else "#0072B2" for r in shown.role]
    for ax, side, title in zip(axes[0], SIDES, ("in-distribution (suite '%s')" % ctx.spec["suite"],
                                                "out-of-distribution (suite '%s')" % ctx.spec["ood_suite"])):
        v = shown[side].to_numpy()
        err = np.array([v - shown[f"{side}_lo"].to_numpy(), shown[f"{side}_hi"].to_numpy() - v])
        ax.bar(x, v, 0.65, color=cols, yerr=err, capsize=3, error_kw={"lw": 1})
        for xi, (_, r) in zip(x, shown.iterrows()):
            note = f"{r[side]:.3f}"
            if r.role == "restored":
                note += f"\n{_pct(r[f'{side}_recovered'])}"
            ax.annotate(note, (xi, r[f"{side}_hi"]), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=6.5)
        ax.axhline(base[side], color=BASE_COLOR, ls="--", lw=1.2)
        ax.axhspan(base[f"{side}_lo"], base[f"{side}_hi"], color=BASE_COLOR, alpha=0.12, lw=0)
        ax.set_xticks(x, [label_of(r) for _, r in shown.iterrows()], fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pass@1")
        top = max(float(shown[f"{side}_hi"].max()), float(base[f"{side}_hi"]), 0.05)
        ax.set_ylim(0, min(1.0, top * 1.3))
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
    legend, handles = [], []
    for _, r in shown[shown.role == "restored"].iterrows():
        handles.append(Line2D([], [], color="#0072B2", lw=4))
        legend.append(f"{label_of(r)}: vs SFT ID {100 * r.id_vs_sft:+.1f} [{100 * r.id_vs_sft_lo:+.1f}, "
                      f"{100 * r.id_vs_sft_hi:+.1f}] pp, OOD {100 * r.ood_vs_sft:+.1f} [{100 * r.ood_vs_sft_lo:+.1f}, "
                      f"{100 * r.ood_vs_sft_hi:+.1f}] pp (paired); recovered ID {_pct(r.id_recovered)}, "
                      f"OOD {_pct(r.ood_recovered)}")
    handles += [Line2D([], [], color=SFT_COLOR, lw=4), Line2D([], [], color=BASE_COLOR, ls="--", lw=1.2)]
    sft = shown[shown.role == "sft"].iloc[0]
    legend += [f"SFT checkpoint {sft.checkpoint}: ID {sft.id:.3f}, OOD {sft.ood:.3f}",
               f"base {base.checkpoint}: ID {base.id:.3f} [{base.id_lo:.3f}, {base.id_hi:.3f}], "
               f"OOD {base.ood:.3f} [{base.ood_lo:.3f}, {base.ood_hi:.3f}]"]
    example = acc.read_evaluation(ctx, ctx.files("ft_eval_ood")[0], None)
    finish(fig, ctx, subtitle_extra=f"OOD: {acc.describe(example)}", handles=handles, labels=legend, legend_cols=1)
    return fig


def restore_topk(ctx: Context):
    def order(r):
        return r.top_p if r.top_p is not None and not pd.isna(r.top_p) else math.inf

    def label(r):
        return "SFT (p = 0)" if r.role == "sft" else f"top {100 * r.top_p:g}%"

    return _restoration_figure(ctx, order, "singular directions restored (top p of each matrix)", label)


def restore_layers(ctx: Context):
    def order(r):
        return -1 if r.role == "sft" else (GROUP_ORDER.index(r.layers) if r.layers in GROUP_ORDER else len(GROUP_ORDER))

    def label(r):
        return "SFT" if r.role == "sft" else f"{r.layers} quarter"

    return _restoration_figure(ctx, order, "layers restored (every singular direction)", label)


# ---------------------------------------------------------------------------- rotation profile


def rotation_profile(ctx: Context):
    curves = rotation_curves(ctx)
    accs = rotation_accuracy_rows(ctx)
    fig, axes = new_figure(1, 4, panel_w=3.4, panel_h=3.0)
    ax_u, ax_v, ax_layer, ax_acc = axes[0]
    cols = colors(len(ctx.pair_ids))
    for pid, c in zip(ctx.pair_ids, cols):
        cur = curves[curves.pair == pid]
        for ax, side in ((ax_u, "left"), (ax_v, "right")):
            ax.plot(cur["index"], cur[f"{side}_deg"], color=c, lw=1.3)
            ax.plot(cur["index"], cur[f"{side}_window_deg"], color=c, lw=1.0, ls=":")
        layers = read_csv(ctx.name, ctx.files("rotation_layers")[ctx.pair_ids.index(pid)],
                          ("layer", "left_deg_mean", "right_deg_mean"), "per-layer rotation table")
        ax_layer.plot(layers["layer"], layers["left_deg_mean"], color=c, marker="o", ms=3, lw=1.3)
        ax_layer.plot(layers["layer"], layers["right_deg_mean"], color=c, marker="s", ms=3, lw=1.0, ls="--")
    for ax, side in ((ax_u, "U (left)"), (ax_v, "V (right)")):
        ax.set_xlabel("singular-value index i")
        ax.set_ylabel("angle (degrees), mean over matrices")
        ax.set_title(f"{side}: per index; dotted: window", fontsize=9)
    ax_layer.set_xlabel("decoder layer")
    ax_layer.set_ylabel("mean per-index angle (degrees)")
    ax_layer.set_title("per layer: U (o), V (s, dashed)", fontsize=9)
    integer_layer_axis(ax_layer, sorted(set().union(*[set(read_csv(ctx.name, f, ("layer",), "per-layer rotation table")["layer"])
                                                     for f in ctx.files("rotation_layers")])))
    x = np.arange(len(accs))
    w = 0.38
    for off, side, hatch in ((-w / 2, "id", None), (w / 2, "ood", "//")):
        v = accs[side].to_numpy()
        err = np.array([v - accs[f"{side}_lo"].to_numpy(), accs[f"{side}_hi"].to_numpy() - v])
        ax_acc.bar(x + off, v, w, color="#999999" if side == "id" else "#56B4E9", hatch=hatch, yerr=err, capsize=2,
                   error_kw={"lw": 1}, label="in-distribution" if side == "id" else "out-of-distribution")
    ax_acc.set_xticks(x, [wrap(c, 14) for c in accs.checkpoint], fontsize=6.5, rotation=30, ha="right")
    ax_acc.set_ylabel("pass@1")
    ax_acc.set_title("ID and OOD pass@1 (95% CI)")
    ax_acc.legend(fontsize=7)
    ax_acc.grid(axis="x", visible=False)
    handles = [Line2D([], [], color=c, lw=1.6) for c in cols]
    labels = []
    for pid in ctx.pair_ids:
        cur = curves[curves.pair == pid]
        top = cur[cur["index"] < max(1, len(cur) // 4)]
        labels.append(f"{ctx.label(pid)} ({ctx.pairs[pid]['base']} → {ctx.pairs[pid]['finetuned']}): top-quarter "
                      f"indices U {top.left_deg.mean():.1f}°, V {top.right_deg.mean():.1f}°, "
                      f"|Δσ/σ| {100 * top.abs_rel_sv_change.mean():.2f}%")
    window = ctx.metrics.get("rotation_window", 4)
    finish(fig, ctx, subtitle_extra=f"window w = {window}", handles=handles, labels=labels, legend_cols=1)
    return fig


# ---------------------------------------------------------------------------- SFT length, then RL


def sft_then_rl(ctx: Context):
    rows = sft_then_rl_rows(ctx)
    fig, axes = new_figure(1, 2, panel_w=4.2, panel_h=3.2)
    steps = rows["sft_steps"].to_numpy()
    for ax, side, title in zip(axes[0], SIDES, ("in-distribution", "out-of-distribution")):
        for what, c, marker in (("sft", SFT_COLOR, "o"), ("rl", "#0072B2", "s")):
            v = rows[f"{side}_{what}"].to_numpy()
            err = np.array([v - rows[f"{side}_{what}_lo"].to_numpy(), rows[f"{side}_{what}_hi"].to_numpy() - v])
            ax.errorbar(steps, v, yerr=err, color=c, marker=marker, ms=4, lw=1.4, capsize=3)
        ax.axhline(rows[f"{side}_base"].iloc[0], color=BASE_COLOR, ls="--", lw=1.2)
        ax.set_xlabel("SFT steps")
        ax.set_ylabel("pass@1")
        ax.set_xticks(steps)
        ax.set_title(f"{title} (suite '{ctx.spec['suite' if side == 'id' else 'ood_suite']}')")
    handles = [Line2D([], [], color=SFT_COLOR, marker="o", lw=1.4), Line2D([], [], color="#0072B2", marker="s", lw=1.4),
               Line2D([], [], color=BASE_COLOR, ls="--", lw=1.2)]
    labels = ["SFT checkpoint", "RL from it", f"base {rows['base'].iloc[0]}"]
    for _, r in rows.iterrows():
        handles.append(Line2D([], [], color="none"))
        labels.append(f"SFT {r.sft_steps} steps → RL: OOD gain {100 * r.ood_rl_gain:+.1f} [{100 * r.ood_rl_gain_lo:+.1f}, "
                      f"{100 * r.ood_rl_gain_hi:+.1f}] pp (paired), recovered {_pct(r.ood_recovered)}; ID gain "
                      f"{100 * r.id_rl_gain:+.1f} [{100 * r.id_rl_gain_lo:+.1f}, {100 * r.id_rl_gain_hi:+.1f}] pp")
    finish(fig, ctx, handles=handles, labels=labels, legend_cols=1)
    return fig


__all__ = ["restore_topk", "restore_layers", "rotation_profile", "sft_then_rl", "restoration_rows",
           "rotation_curves", "rotation_accuracy_rows", "sft_then_rl_rows", "recovered"]
