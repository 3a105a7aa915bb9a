"""Principal-subspace rotation per decoder block (Fig. 1c, Fig. 8, Fig. 18).

Reads each pair's ``geometry.csv``: ``max_angle_U_deg`` / ``max_angle_V_deg`` are the largest
principal angle between the base's and the fine-tuned model's top-k left / right singular
subspaces at the report k; they are averaged over each block's matrices. Fig. 1c adds the
block mean of NSS on a log axis.
"""

from __future__ import annotations

from matplotlib.lines import Line2D

from offprincipal.artifacts.data.context import (
    ArtifactInputError,
    Context,
    finite_or_raise,
    layer_mean,
    layered,
    read_csv,
)
from offprincipal.artifacts.figures.style import colors, finish, integer_layer_axis, new_figure

GEOMETRY_COLUMNS = ("name", "layer", "max_angle_U_deg", "max_angle_V_deg", "report_k")


def per_layer_rotation(ctx: Context, *, with_nss: bool) -> tuple[dict, set]:
    """Per pair: a layer-indexed frame of block means; and the k values the angles are at."""
    cols = GEOMETRY_COLUMNS + (("nss",) if with_nss else ())
    out, ks = {}, set()
    for pid, path in zip(ctx.pair_ids, ctx.files("geometry")):
        df = layered(read_csv(ctx.name, path, cols, "geometry"), ctx.name, path)
        value_cols = ["max_angle_U_deg", "max_angle_V_deg"] + (["nss"] if with_nss else [])
        for c in value_cols:
            finite_or_raise(df[c], ctx.name, path, c)
        out[pid] = layer_mean(df, value_cols)
        ks.update(int(k) for k in df["report_k"].dropna().unique())
    return out, ks


def k_text(ks: set) -> str:
    if len(ks) == 1:
        return f"k = {next(iter(ks))}"
    if ks:
        return f"k = {', '.join(str(k) for k in sorted(ks))} (largest k ≤ report_k per matrix)"
    raise ArtifactInputError("the geometry files give no report k (column report_k is empty)")


def render(ctx: Context, *, with_nss: bool):
    data, ks = per_layer_rotation(ctx, with_nss=with_nss)
    kt = k_text(ks)
    panels = [("max_angle_U_deg", "left singular subspace U"), ("max_angle_V_deg", "right singular subspace V")]
    if with_nss:
        panels.append(("nss", "normalized spectrum shift"))
    fig, axes = new_figure(1, len(panels))
    cols = colors(len(ctx.pair_ids))
    layers = set()
    for ax, (col, subtitle) in zip(axes[0], panels):
        for pid, c in zip(ctx.pair_ids, cols):
            s = data[pid][col]
            ax.plot(s.index, s.values, marker="o", ms=3.5, lw=1.4, color=c, clip_on=False, zorder=3)
            layers.update(s.index)
        ax.set_title(subtitle)
        if col == "nss":
            ax.set_yscale("log")
            ax.set_ylabel("NSS (block mean, log scale)")
        else:
            ax.set_ylabel(f"max principal angle at {kt if len(ks) == 1 else 'report k'} (°)")
            ax.set_ylim(bottom=0)
    for ax in axes[0]:
        integer_layer_axis(ax, layers)
    handles = [Line2D([], [], color=c, marker="o", ms=3.5, lw=1.4) for c in cols]
    labels = [ctx.label(p) for p in ctx.pair_ids]
    finish(fig, ctx, subtitle_extra=f"{kt}; mean over each block's matrices", handles=handles, labels=labels)
    return fig


def fig1c(ctx: Context):
    return render(ctx, with_nss=True)


def fig8(ctx: Context):
    return render(ctx, with_nss=False)


fig18 = fig8

