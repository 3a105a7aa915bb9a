"""Scrambling the base's geometry removes the update bias (Fig. 6): the figure.

Its pairs (reference run A, independent run B, run C from a function-preserving
intervened base) and its numbers -- per block and module group, Jaccard(A, B), Jaccard(A, C)
in base coordinates and their independent-Bernoulli baselines -- are described and computed
in :mod:`offprincipal.artifacts.data.intervention`, shared with Fig. 6's claim; this module
draws them.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from offprincipal.artifacts.data.context import ArtifactInputError, Context
from offprincipal.artifacts.data.intervention import GROUPS, intervened_overlap, intervention_record
from offprincipal.artifacts.figures.style import finish, integer_layer_axis, new_figure
from offprincipal.metrics.masks import MaskFile

GROUP_TITLES = {"attention": "attention projections (q, k, v, o)", "mlp": "MLP projections (gate, up, down)"}


def fig6(ctx: Context):
    record, _ = intervention_record(ctx)
    paths = ctx.files("masks")
    with ExitStack() as stack:
        files = [stack.enter_context(MaskFile(p)) for p in paths]
        try:
            table = intervened_overlap(*files, record)
        except ValueError as err:
            raise ArtifactInputError(f"{ctx.name}: mask files {paths}: {err}") from None
    groups = [g for g in GROUPS if g in set(table["group"])]
    fig, axes = new_figure(1, len(groups), panel_w=4.4, panel_h=3.3)
    c_ab, c_ac = "#0072B2", "#D55E00"
    layers = sorted(set(table["layer"]))
    for ax, group in zip(axes[0], groups):
        t = table[table["group"] == group].set_index("layer").sort_index()
        top = float(np.nanmax(t[["jaccard_ab", "jaccard_ac", "baseline_ab", "baseline_ac"]].to_numpy()))
        ymax = min(1.05, max(0.1, top * 1.25))
        for layer, row in t.iterrows():
            if row["intervened"]:
                ax.axvspan(layer - 0.4, layer + 0.4, color="#999999", alpha=0.18, lw=0)
                ax.text(layer, ymax * 0.02, row["intervention"].replace("rotate", "ROT").replace("permute", "PERM"),
                        ha="center", va="bottom", fontsize=7, color="#333333")
        ax.plot(t.index, t["jaccard_ab"], color=c_ab, marker="o", ms=4, lw=1.6)
        ax.plot(t.index, t["jaccard_ac"], color=c_ac, marker="s", ms=4, lw=1.6)
        ax.plot(t.index, t["baseline_ab"], color=c_ab, ls="--", lw=1.0)
        ax.plot(t.index, t["baseline_ac"], color=c_ac, ls="--", lw=1.0)
        ax.set_ylim(0, ymax)
        ax.set_ylabel("Jaccard of update masks (pooled)")
        ax.set_title(GROUP_TITLES[group])
        integer_layer_axis(ax, layers)
        ax.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    a, b, c = (ctx.label(p) for p in ctx.pair_ids)
    handles = [Line2D([], [], color=c_ab, marker="o", ms=4, lw=1.6), Line2D([], [], color=c_ac, marker="s", ms=4, lw=1.6),
               Line2D([], [], color="k", ls="--", lw=1.0), Patch(color="#999999", alpha=0.3)]
    labels = ["A vs B: independent run from the same base (consistency level)",
              "A vs C: run from the intervened base (C mapped back to base coordinates)",
              "independent-Bernoulli baseline at the runs' densities (dashed, same colour)",
              "intervened layer (ROT = rotate, PERM = permute)"]
    inter = table[table["intervened"] & (table["group"] == "attention")]
    note = f"A = {a}\nB = {b}\nC = {c}"
    if not inter.empty:
        n_map, n_rot = int(inter["n_mapped_back"].sum()), int(inter["n_rotated"].sum())
        note += (f"\nintervened attention: {n_map} permuted matrices mapped back to base coordinates, "
                 f"{n_rot} rotated matrices (v, o) compared as stored")
    finish(fig, ctx, subtitle_extra="per decoder block, masks pooled over the group's matrices",
           handles=handles, labels=labels, footnote=note, legend_cols=1)
    return fig
