"""Figures drawn from training runs: KL and reward trajectories, accuracy, adapters, step size.

* Fig. 9 — dense vs masked RL: KL to the base per step and held-out pass@1 per run.
* Fig. 15 — per-step KL to the base of RL runs (exact ``kl``; ``kl_k3`` dashed).
* Fig. 10 — LoRA vs PiSSA: training reward per step, final pass@1 against learning rate.
* Fig. 11 — LoRA vs PiSSA against learning rate: pass@1, mean NSS, mean principal angle.
* Sec. 2.3 — update sparsity of one RL recipe at several learning rates, overall and by module.

Each run's numbers come from its directory's ``run.json`` (the resolved run spec: mask,
adapter, rank, learning rate) and ``metrics.jsonl``; accuracies (with 95% bootstrap intervals
over problems, and paired differences) from the evaluation stage's files
(:mod:`offprincipal.artifacts.data.accuracy`); NSS and angles from ``geometry.csv``; sparsity from ``updates.csv``.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from offprincipal.artifacts.data import accuracy as acc
from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_csv
from offprincipal.artifacts.data.runs import KL_COLUMNS, Run, lr_text, mask_text, read_runs, read_updates, sparsity
from offprincipal.artifacts.figures.style import colors, finish, new_figure, wrap

BASE_COLOR = "#555555"
ADAPTER_ORDER = ("lora", "pissa", "none")
ADAPTER_COLORS = {"lora": "#0072B2", "pissa": "#D55E00", "none": "#009E73"}
RANK_STYLES = ("-", "--", ":", "-.")
RANK_MARKERS = ("o", "s", "^", "D", "v")
KIND_ORDER = ("q", "k", "v", "o", "gate", "up", "down", "embedding", "norm")


def _unique_labels(texts: list[str], runs: list[Run]) -> list[str]:
    """``texts`` made unique by appending the run id where two runs would share a label."""
    out = []
    for t, r in zip(texts, runs):
        out.append(f"{t} [{r.run_id}]" if texts.count(t) > 1 else t)
    return out


def _base_line(ax, accs: dict[str, acc.Accuracy]) -> list[tuple]:
    """Dashed line(s) at the base checkpoint(s)' pass@1, shaded over its 95% interval; returns
    legend entries."""
    entries = []
    for i, (ckpt, a) in enumerate(accs.items()):
        ls = ("--", ":", "-.")[i % 3]
        ax.axhline(a.value, color=BASE_COLOR, ls=ls, lw=1.2)
        ax.axhspan(a.lo, a.hi, color=BASE_COLOR, alpha=0.12, lw=0)
        entries.append((Line2D([], [], color=BASE_COLOR, ls=ls, lw=1.2),
                        f"base checkpoint ({ckpt}): pass@1 = {a.value:.3f} [{a.lo:.3f}, {a.hi:.3f}]"))
    return entries


#: how each of the KL columns (``KL_COLUMNS``) is measured, for the figure's footnote
_KL_TEXT = {"kl": "exact KL over the vocabulary, mean over completion tokens",
            "kl_k3": "k3 estimator r − log r − 1 on sampled tokens (verl's low_var_kl)"}


def _kl_text(shown: set[str]) -> str:
    return "; ".join(_KL_TEXT[c] for c in KL_COLUMNS if c in shown)


def _kl_axes(ax) -> None:
    ax.set_xlabel("training step")
    ax.set_ylabel("token-wise KL(π_θ ‖ π_base)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


# ---------------------------------------------------------------------------- Fig. 9


def fig9(ctx: Context):
    runs = read_runs(ctx)
    results = acc.evaluations(ctx, "ft")
    accs = [acc.accuracy(r) for r in results]
    base = acc.base_accuracies(ctx)
    paired = acc.read_paired(ctx)
    ref_pair = ctx.spec.get("reference")
    ref = ctx.pairs[ref_pair]["finetuned"] if ref_pair else None
    labels = _unique_labels([mask_text(r) for r in runs], runs)
    cols = colors(len(runs))
    fig, axes = new_figure(1, 2, panel_w=4.6, panel_h=3.4)
    ax_kl, ax_acc = axes[0]
    shown = set()
    for r, c in zip(runs, cols):
        col, rows = r.column(ctx.name, *KL_COLUMNS)
        shown.add(col)
        ax_kl.plot(rows["step"], rows[col], color=c, lw=1.6, marker="o" if len(rows) <= 30 else None, ms=3)
    _kl_axes(ax_kl)
    ax_kl.set_title("KL to the base per step (logged, not in the loss)")
    x = np.arange(len(runs))
    values = [a.value for a in accs]
    err = np.array([[a.value - a.lo for a in accs], [a.hi - a.value for a in accs]])
    bars = ax_acc.bar(x, values, 0.65, color=cols, yerr=err, capsize=3, error_kw={"lw": 1})
    for rect, a in zip(bars, accs):
        ax_acc.annotate(f"{a.value:.3f}", (rect.get_x() + rect.get_width() / 2, a.hi), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7.5)
    base_entries = _base_line(ax_acc, base)
    ax_acc.set_xticks(x, [wrap(lab, 16) for lab in labels], fontsize=7, rotation=30, ha="right")
    ax_acc.set_ylabel("pass@1")
    ax_acc.set_ylim(0, min(1.0, max([*(a.hi for a in accs), *(b.hi for b in base.values()), 0.05]) * 1.25))
    ax_acc.set_title("pass@1 of the final checkpoints (95% CI)")
    ax_acc.grid(axis="x", visible=False)
    handles = [Line2D([], [], color=c, lw=1.6, marker="o", ms=3) for c in cols]
    legend = []
    for lab, pid in zip(labels, ctx.pair_ids):
        ckpt = ctx.pairs[pid]["finetuned"]
        text = f"{lab}: {ctx.label(pid)}"
        if ref and ckpt != ref:
            text += f"; vs {ctx.label(ref_pair)}: {acc.difference(ctx, paired, ckpt, ref).text()} pp (paired)"
        legend.append(text)
    handles += [h for h, _ in base_entries]
    legend += [t for _, t in base_entries]
    finish(fig, ctx, subtitle_extra=f"KL: {_kl_text(shown)}; accuracy: {acc.describe(results[0])}",
           handles=handles, labels=legend, legend_cols=1)
    return fig


# ---------------------------------------------------------------------------- Fig. 15


def fig15(ctx: Context):
    runs = read_runs(ctx)
    cols = colors(len(runs))
    fig, axes = new_figure(1, 1, panel_w=6.4, panel_h=3.6)
    ax = axes[0][0]
    any_k3, shown = False, set()
    for r, c in zip(runs, cols):
        col, rows = r.column(ctx.name, *KL_COLUMNS)
        shown.add(col)
        ax.plot(rows["step"], rows[col], color=c, lw=1.7, marker="o" if len(rows) <= 30 else None, ms=3)
        if col != "kl_k3" and "kl_k3" in r.log.columns and r.log["kl_k3"].notna().any():
            k3 = r.log[["step", "kl_k3"]].dropna()
            ax.plot(k3["step"], k3["kl_k3"], color=c, lw=1.1, ls="--")
            any_k3 = True
    _kl_axes(ax)
    ax.set_title("KL to the base per training step (logged, not in the loss)")
    handles = [Line2D([], [], color=c, lw=1.7, marker="o", ms=3) for c in cols]
    labels = [f"{ctx.label(p)} (lr {lr_text(r.lr)})" for p, r in zip(ctx.pair_ids, runs)]
    if any_k3:
        handles.append(Line2D([], [], color="k", lw=1.1, ls="--"))
        labels.append("k3 estimator r − log r − 1 on sampled tokens (dashed, same colour)")
    kl_coef = {float(r.spec.get("kl_coef", 0.0)) for r in runs}
    in_loss = any(r.spec.get("kl_in_loss") for r in runs)
    algos = "/".join(sorted({str(r.spec.get("algorithm", "?")).upper() for r in runs}))
    extra = f"{algos}; solid: {_kl_text(shown)}; " + (
        f"KL in the loss (β = {', '.join(f'{b:g}' for b in sorted(kl_coef))})" if in_loss else "β = 0 (KL not in the loss)")
    finish(fig, ctx, subtitle_extra=extra, handles=handles, labels=labels, legend_cols=1)
    return fig


# ---------------------------------------------------------------------------- Fig. 10 / 11


def _adapter_runs(ctx: Context) -> tuple[list[Run], list[str]]:
    runs = read_runs(ctx)
    groups = [a for a in ADAPTER_ORDER if any(r.adapter == a for r in runs)]
    other = sorted({r.adapter for r in runs} - set(ADAPTER_ORDER))
    if other:
        raise ArtifactInputError(f"{ctx.name}: runs with unknown adapter(s) {other}")
    return runs, groups


def _rank_styles(runs: list[Run]) -> dict:
    ranks = sorted({r.rank for r in runs if r.rank is not None})
    out = {rk: (RANK_STYLES[i % len(RANK_STYLES)], RANK_MARKERS[i % len(RANK_MARKERS)]) for i, rk in enumerate(ranks)}
    out[None] = ("-", "*")
    return out


def _curve_key(r: Run) -> tuple:
    return (r.adapter, r.rank)


def _curve_label(adapter: str, rank) -> str:
    return f"{ADAPTER_NAMES_SHORT.get(adapter, adapter)}" + (f" rank {rank}" if rank is not None else "")


ADAPTER_NAMES_SHORT = {"lora": "LoRA", "pissa": "PiSSA", "none": "full FT"}


def _by_lr(points: list[tuple[Run, float]]) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """Per (adapter, rank): learning rates (sorted) and the mean value at each."""
    out: dict[tuple, dict[float, list[float]]] = {}
    for r, v in points:
        out.setdefault(_curve_key(r), {}).setdefault(r.lr, []).append(v)
    return {k: (np.array(sorted(d)), np.array([np.mean(d[lr]) for lr in sorted(d)])) for k, d in out.items()}


def _lr_intervals(ax, runs: list[Run], accs: list[acc.Accuracy], styles) -> None:
    """Each run's 95% interval as a vertical bar at its learning rate."""
    for r, a in zip(runs, accs):
        ax.errorbar([r.lr], [a.value], yerr=[[a.value - a.lo], [a.hi - a.value]], color=ADAPTER_COLORS[r.adapter],
                    lw=0.9, capsize=2.5, fmt="none")


def _lr_curves(ax, points, styles, *, annotate: bool = False) -> None:
    curves = sorted(_by_lr(points).items(), key=lambda kv: (ADAPTER_ORDER.index(kv[0][0]), kv[0][1] or 0))
    for (adapter, rank), (x, y) in curves:
        ls, mk = styles[rank]
        ax.plot(x, y, color=ADAPTER_COLORS[adapter], ls=ls, marker=mk, ms=5, lw=1.5)
        if annotate:
            for xi, yi in zip(x, y):
                ax.annotate(f"{yi:.2f}", (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=6.5,
                            color=ADAPTER_COLORS[adapter])
    ax.set_xscale("log")
    ax.margins(x=0.08)
    ax.set_xlabel("learning rate")


def _acc_ylim(ax, values) -> None:
    top = min(1.0, max([*values, 0.05]) * 1.3)
    ax.set_ylim(-0.03 * top, top)


def _adapter_legend(runs: list[Run], styles) -> tuple[list, list[str]]:
    keys = sorted({_curve_key(r) for r in runs}, key=lambda k: (ADAPTER_ORDER.index(k[0]), k[1] or 0))
    handles = [Line2D([], [], color=ADAPTER_COLORS[a], ls=styles[rk][0], marker=styles[rk][1], ms=5, lw=1.5)
               for a, rk in keys]
    return handles, [_curve_label(a, rk) for a, rk in keys]


def fig10(ctx: Context):
    runs, groups = _adapter_runs(ctx)
    results = acc.evaluations(ctx, "ft")
    accs = [acc.accuracy(r) for r in results]
    base = acc.base_accuracies(ctx)
    styles = _rank_styles(runs)
    lrs = sorted({r.lr for r in runs})
    cmap = matplotlib.colormaps["viridis"]
    lr_color = {lr: cmap(0.1 + 0.75 * i / max(1, len(lrs) - 1)) for i, lr in enumerate(lrs)}
    fig, axes = new_figure(1, len(groups) + 1, panel_w=3.8, panel_h=3.2)
    reward_cols = set()
    ylims = []
    for ax, group in zip(axes[0], groups):
        for r in runs:
            if r.adapter != group:
                continue
            col, rows = r.column(ctx.name, "task_reward_mean", "reward_mean", "reward")
            reward_cols.add(col)
            ls, _ = styles[r.rank]
            ax.plot(rows["step"], rows[col], color=lr_color[r.lr], ls=ls, lw=1.5)
            ylims += [rows[col].min(), rows[col].max()]
        ax.set_title(f"{ADAPTER_NAMES_SHORT[group]}: training reward per step")
        ax.set_xlabel("training step")
        ax.set_ylabel("mean reward of the step's rollouts")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    lo, hi = float(np.min(ylims)), float(np.max(ylims))
    pad = 0.05 * (hi - lo) if hi > lo else 0.05
    for ax in axes[0][: len(groups)]:
        ax.set_ylim(lo - pad, hi + pad)
    ax = axes[0][-1]
    _lr_curves(ax, [(r, a.value) for r, a in zip(runs, accs)], styles, annotate=True)
    _lr_intervals(ax, runs, accs, styles)
    base_entries = _base_line(ax, base)
    ax.set_ylabel("pass@1 (final checkpoint, 95% CI)")
    ax.set_title("pass@1 against learning rate")
    _acc_ylim(ax, [*(a.hi for a in accs), *(b.hi for b in base.values())])
    handles, labels = _adapter_legend(runs, styles)
    handles += [Line2D([], [], color=lr_color[lr], lw=3) for lr in lrs]
    labels += [f"lr {lr_text(lr)} (reward panels)" for lr in lrs]
    handles += [h for h, _ in base_entries]
    labels += [t for _, t in base_entries]
    col = "/".join(sorted(reward_cols))
    extra = (f"reward column '{col}' of metrics.jsonl; adapters merged into full weights for evaluation; "
             f"{acc.describe(results[0])}{_contrast_text(ctx)}")
    finish(fig, ctx, subtitle_extra=extra, handles=handles, labels=labels, legend_cols=3)
    return fig


def _contrast_text(ctx: Context) -> str:
    """The spec's explicit paired contrasts (e.g. PiSSA minus LoRA), as subtitle text."""
    contrasts = ctx.spec.get("contrasts") or []
    if not contrasts:
        return ""
    paired = acc.read_paired(ctx)
    parts = [f"{a} − {b}: {acc.difference(ctx, paired, a, b).text()} pp" for a, b in contrasts]
    return "; paired differences " + ", ".join(parts)


def _geometry_means(ctx: Context) -> tuple[list[float], list[float], list[float], int | None]:
    nss, ang_u, ang_v, ks = [], [], [], set()
    for path in ctx.files("geometry"):
        df = read_csv(ctx.name, path, ("name", "nss", "max_angle_U_deg", "max_angle_V_deg"), "geometry")
        for c in ("nss", "max_angle_U_deg", "max_angle_V_deg"):
            if not np.isfinite(df[c].to_numpy(dtype=float)).any():
                raise ArtifactInputError(f"{ctx.name}: input file {path} (geometry) has no finite values of {c!r}")
        nss.append(float(df["nss"].mean()))
        ang_u.append(float(df["max_angle_U_deg"].mean()))
        ang_v.append(float(df["max_angle_V_deg"].mean()))
        if "report_k" in df.columns:
            ks.update(int(k) for k in df["report_k"].dropna().unique())
    return nss, ang_u, ang_v, (ks.pop() if len(ks) == 1 else None)


def fig11(ctx: Context):
    runs, _ = _adapter_runs(ctx)
    results = acc.evaluations(ctx, "ft")
    accs = [acc.accuracy(r) for r in results]
    base = acc.base_accuracies(ctx)
    nss, ang_u, ang_v, k = _geometry_means(ctx)
    styles = _rank_styles(runs)
    fig, axes = new_figure(1, 3, panel_w=3.7, panel_h=3.2)
    ax_acc, ax_nss, ax_ang = axes[0]
    _lr_curves(ax_acc, [(r, a.value) for r, a in zip(runs, accs)], styles, annotate=True)
    _lr_intervals(ax_acc, runs, accs, styles)
    base_entries = _base_line(ax_acc, base)
    ax_acc.set_ylabel("pass@1 (95% CI)")
    _acc_ylim(ax_acc, [*(a.hi for a in accs), *(b.hi for b in base.values())])
    ax_acc.set_title("accuracy")
    _lr_curves(ax_nss, list(zip(runs, nss)), styles)
    ax_nss.set_ylabel("mean NSS over matrices")
    ax_nss.set_title("spectrum drift (normalized spectrum shift)")
    ax_nss.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _lr_curves(ax_ang, list(zip(runs, ang_u)), styles)
    for (adapter, rank), (x, y) in _by_lr(list(zip(runs, ang_v))).items():
        ax_ang.plot(x, y, color=ADAPTER_COLORS[adapter], ls=styles[rank][0], marker=styles[rank][1], ms=5, lw=0.8,
                    mfc="white", alpha=0.9)
    ax_ang.set_ylabel("largest principal angle (degrees)")
    ax_ang.set_title(f"rotation of the top-{k if k else 'k'} singular subspaces")
    ax_ang.set_ylim(bottom=0)
    handles, labels = _adapter_legend(runs, styles)
    handles += [Line2D([], [], color="k", marker="o", lw=1.5, ms=5),
                Line2D([], [], color="k", marker="o", lw=0.8, ms=5, mfc="white")]
    labels += ["left subspace U (filled markers)", "right subspace V (open markers)"]
    handles += [h for h, _ in base_entries]
    labels += [t for _, t in base_entries]
    finish(fig, ctx, subtitle_extra="NSS and angles: means over all analysed matrices of each merged final "
           f"checkpoint; {acc.describe(results[0])}{_contrast_text(ctx)}", handles=handles, labels=labels,
           legend_cols=3)
    return fig


# ---------------------------------------------------------------------------- Sec. 2.3


PROJ = ("q", "k", "v", "o", "gate", "up", "down")


def _kind_styles(kinds: list[str]) -> dict[str, dict]:
    """Projections in the palette with solid lines; other kinds grey, dashed, own markers."""
    proj = [k for k in kinds if k in PROJ]
    out = {k: dict(color=c, marker="o", ms=3.5, lw=1.3, ls="-") for k, c in zip(proj, colors(len(proj)))}
    greys = ("#555555", "#999999", "#333333", "#bbbbbb")
    marks = ("s", "^", "D", "v")
    for i, k in enumerate(k for k in kinds if k not in PROJ):
        out[k] = dict(color=greys[i % len(greys)], marker=marks[i % len(marks)], ms=4, lw=1.2, ls=("--", ":", "-.")[i % 3])
    return out


def sec2_3(ctx: Context):
    runs = read_runs(ctx)
    rows = []
    for pid, path, r in zip(ctx.pair_ids, ctx.files("updates"), runs):
        df = read_updates(ctx, path)
        rows.append({"pair": pid, "lr": r.lr, "kind": "all", "sparsity": 100.0 * sparsity(df)})
        for kind, g in df.groupby("kind"):
            rows.append({"pair": pid, "lr": r.lr, "kind": str(kind), "sparsity": 100.0 * sparsity(g)})
    table = pd.DataFrame(rows)
    lrs = sorted(set(table["lr"]))
    if len(lrs) < 2:
        raise ArtifactInputError(f"{ctx.name}: the runs of the spec's pairs share one learning rate ({lrs}); "
                                 "the figure compares several")
    fig, axes = new_figure(1, 2, panel_w=4.4, panel_h=3.4)
    ax_all, ax_kind = axes[0]
    overall = table[table["kind"] == "all"].groupby("lr")["sparsity"].mean().sort_index()
    ax_all.plot(overall.index, overall.values, color="k", marker="o", lw=1.8, ms=5)
    each = table[table["kind"] == "all"]
    if len(each) > len(overall):  # several runs at one learning rate: show each
        ax_all.scatter(each["lr"], each["sparsity"], color="k", s=10, alpha=0.5, zorder=3)
    for x, y in overall.items():
        ax_all.annotate(f"{y:.1f}%", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7.5)
    ax_all.set_xscale("log")
    ax_all.set_xlabel("learning rate")
    ax_all.set_ylabel("update sparsity (%)")
    ax_all.set_title("all stored parameters")
    ax_all.set_ylim(max(0.0, float(overall.min()) - 10), 102)
    kinds = [k for k in KIND_ORDER if k in set(table["kind"])] + sorted(set(table["kind"]) - set(KIND_ORDER) - {"all"})
    styles = _kind_styles(kinds)
    for kind in kinds:
        s = table[table["kind"] == kind].groupby("lr")["sparsity"].mean().sort_index()
        ax_kind.plot(s.index, s.values, **styles[kind])
    ax_kind.set_xscale("log")
    ax_kind.set_xlabel("learning rate")
    ax_kind.set_ylabel("update sparsity (%)")
    ax_kind.set_title("by module kind")
    ax_kind.set_ylim(max(0.0, float(table["sparsity"].min()) - 10), 102)
    handles = [Line2D([], [], **styles[k]) for k in kinds]
    labels = [f"{k}" + ("_proj" if k in PROJ else "") for k in kinds]
    algos = sorted({str(r.spec.get("algorithm", "?")) for r in runs})
    steps = sorted({r.steps for r in runs if r.steps is not None})
    extra = (f"{'/'.join(algos)} runs of {', '.join(map(str, steps))} steps; η-rule (bf16) sparsity of each pair's "
             f"fine-tuned checkpoint against its base; {len(runs)} runs at {len(lrs)} learning rates")
    finish(fig, ctx, subtitle_extra=extra, handles=handles, labels=labels, legend_cols=min(5, len(labels)))
    return fig


__all__ = ["fig9", "fig10", "fig11", "fig15", "sec2_3"]
