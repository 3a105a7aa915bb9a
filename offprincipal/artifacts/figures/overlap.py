"""Where updates land relative to principal and low-magnitude weights (Fig. 5, 13, 7).

From each pair's ``geometry.csv``: ``overlap_<mask>`` is the share of a matrix's updated
entries inside the mask, ``density_<mask>`` the mask's density (the overlap of updates that
ignore the mask). Matrices are pooled by their number of updated entries
(``update_density * numel``): Σ overlap·updated / Σ updated, and the baseline alike.
"""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from offprincipal.artifacts.data.context import ArtifactInputError, Context, layered, read_csv
from offprincipal.artifacts.data.overlap import pooled_overlap, pooled_overlap_by_layer, updated_counts
from offprincipal.artifacts.figures.style import colors, finish, integer_layer_axis, new_figure, wrap

MASKS = {
    "princ": "principal mask",
    "princ_not_low": "principal and not low-magnitude",
    "low": "low-magnitude mask",
}


def _geometry(ctx: Context, masks) -> dict:
    cols = ["name", "layer", "numel", "update_density"]
    for m in masks:
        cols += [f"overlap_{m}", f"density_{m}"]
    out = {}
    for pid, path in zip(ctx.pair_ids, ctx.files("geometry")):
        df = read_csv(ctx.name, path, cols, "geometry")
        if not (updated_counts(df) > 0).any():
            raise ArtifactInputError(f"{ctx.name}: input file {path} (geometry) has no matrix with updated entries")
        out[pid] = (path, df)
    return out


def _alpha_text(ctx: Context) -> str:
    alpha = ctx.metrics.get("mask_alpha")
    k = ctx.metrics.get("principal_rank_k")
    parts = []
    if alpha is not None:
        parts.append(f"mask fraction α = {alpha:g}")
    if k is not None:
        parts.append(f"principal mask from the rank-{k} reconstruction")
    return "; ".join(parts)


def per_layer(ctx: Context):
    """Fig. 5 / Fig. 13: per block, pooled overlap with the principal and low-magnitude masks."""
    geo = _geometry(ctx, ("princ", "low"))
    pids = ctx.pair_ids
    cols = colors(len(pids))
    fig, axes = new_figure(1, 2, panel_w=4.2, panel_h=3.1)
    layers = set()
    for ax, mask in zip(axes[0], ("princ", "low")):
        base_curves = []
        for pid, c in zip(pids, cols):
            path, df = geo[pid]
            by_layer = pooled_overlap_by_layer(layered(df, ctx.name, path), mask)
            ax.plot(by_layer.index, by_layer["overlap"], color=c, marker="o", ms=3.5, lw=1.4)
            base_curves.append((c, by_layer["baseline"]))
            layers.update(by_layer.index)
        same = all(np.allclose(b.values, base_curves[0][1].values, equal_nan=True) and b.index.equals(base_curves[0][1].index)
                   for _, b in base_curves)
        if same:
            b = base_curves[0][1]
            ax.plot(b.index, b.values, color="k", ls="--", lw=1.1)
        else:
            for c, b in base_curves:
                ax.plot(b.index, b.values, color=c, ls="--", lw=1.0)
        ax.set_title(f"overlap with the {MASKS[mask]}")
        ax.set_ylabel("share of updated entries in mask")
        ax.set_ylim(0, 1)
        integer_layer_axis(ax, layers)
    handles = [Line2D([], [], color=c, marker="o", ms=3.5, lw=1.4) for c in cols]
    labels = [ctx.label(p) for p in pids]
    handles.append(Line2D([], [], color="k", ls="--", lw=1.1))
    labels.append("random baseline = mask density (dashed)")
    finish(fig, ctx, subtitle_extra=_alpha_text(ctx) + "; block = matrices pooled by updated entries",
           handles=handles, labels=labels)
    return fig


def pooled(ctx: Context):
    """Fig. 7: per pair, pooled overlap with princ, princ∖low and low, each beside its baseline."""
    masks = tuple(MASKS)
    geo = _geometry(ctx, masks)
    pids = ctx.pair_ids
    values = {pid: {m: pooled_overlap(geo[pid][1], m) for m in masks} for pid in pids}
    fig, axes = new_figure(1, 1, panel_w=max(6.0, 1.9 * len(pids) + 1.5), panel_h=3.6)
    ax = axes[0][0]
    mask_colors = dict(zip(masks, ("#0072B2", "#009E73", "#D55E00")))
    bar_w = 0.13
    offsets = np.arange(2 * len(masks)) * bar_w - (2 * len(masks) - 1) * bar_w / 2
    x = np.arange(len(pids))
    for j, m in enumerate(masks):
        obs = np.array([values[p][m][0] for p in pids])
        base = np.array([values[p][m][1] for p in pids])
        bo = ax.bar(x + offsets[2 * j], obs, bar_w, color=mask_colors[m], edgecolor=mask_colors[m])
        bb = ax.bar(x + offsets[2 * j + 1], base, bar_w, color="white", edgecolor=mask_colors[m], hatch="///")
        for rects, vals in ((bo, obs), (bb, base)):
            for r, v in zip(rects, vals):
                ax.annotate(f"{v:.2f}", (r.get_x() + r.get_width() / 2, v), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=6.5, rotation=90)
    ax.set_xticks(x, [wrap(ctx.label(p), 30) for p in pids], fontsize=7.5)
    ax.set_ylabel("share of updated entries in mask")
    ax.set_ylim(0, 1.12)
    ax.set_xlim(-0.6, len(pids) - 0.4)
    ax.grid(axis="x", visible=False)
    handles = [Patch(facecolor=mask_colors[m], edgecolor=mask_colors[m]) for m in masks]
    labels = [f"{MASKS[m]}: observed" for m in masks]
    handles += [Patch(facecolor="white", edgecolor=mask_colors[m], hatch="///") for m in masks]
    labels += [f"{MASKS[m]}: random baseline (mask density)" for m in masks]
    finish(fig, ctx, subtitle_extra=_alpha_text(ctx) + "; all matrices pooled by updated entries",
           handles=handles, labels=labels, legend_cols=2)
    return fig


fig5 = fig13 = per_layer
fig7 = pooled
