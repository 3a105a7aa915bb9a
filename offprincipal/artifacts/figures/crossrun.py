"""Cross-run agreement of update masks (Fig. 12 and Fig. 2).

Fig. 12 reads ``crossrun/fig12.csv`` (pairwise pooled Jaccard with its independent-Bernoulli
baseline); Fig. 2 reads the runs' bit-packed masks and counts, per entry of a chosen matrix,
how many runs updated it.
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_csv
from offprincipal.artifacts.figures.style import finish, new_figure
from offprincipal.metrics.crossrun import consensus_counts, consensus_histogram, jaccard_matrix
from offprincipal.metrics.masks import MaskFile, popcount

JACCARD_COLUMNS = ("run_a", "run_b", "jaccard_pooled", "baseline_pooled")


def read_jaccard(ctx: Context, columns=JACCARD_COLUMNS) -> tuple[str, pd.DataFrame]:
    """The artifact's Jaccard table, checked to hold every pair of the spec's runs once."""
    path = ctx.files("jaccard", per_pair=False)[0]
    df = read_csv(ctx.name, path, columns, "cross-run Jaccard")
    runs = ctx.pair_ids
    if len(runs) < 2:
        raise ArtifactInputError(f"{ctx.name}: a cross-run comparison needs at least two runs, the spec lists {runs}")
    have = {frozenset((a, b)) for a, b in zip(df["run_a"], df["run_b"])}
    missing = [f"{a}/{b}" for a, b in itertools.combinations(runs, 2) if frozenset((a, b)) not in have]
    if missing:
        raise ArtifactInputError(f"{ctx.name}: input file {path} (cross-run Jaccard) lacks run pair(s) {missing}")
    keep = df["run_a"].isin(runs) & df["run_b"].isin(runs)
    df = df[keep].reset_index(drop=True)
    if df[list(columns[2:])].isna().any().any():
        raise ArtifactInputError(f"{ctx.name}: input file {path} (cross-run Jaccard) has empty values in {list(columns[2:])}")
    return path, df


def run_key(ctx: Context) -> tuple[list[str], str]:
    """Short tick names R1..Rn and a footnote mapping them to the pairs' labels."""
    ticks = [f"R{i + 1}" for i in range(len(ctx.pair_ids))]
    note = "\n".join(f"{t} = {ctx.label(p)} ({p})" for t, p in zip(ticks, ctx.pair_ids))
    return ticks, note


def fig12(ctx: Context):
    _, df = read_jaccard(ctx)
    runs = ctx.pair_ids
    ticks, note = run_key(ctx)
    mats = {
        "observed Jaccard (pooled over matrices)": jaccard_matrix(df, runs, "jaccard_pooled"),
        "independent-Bernoulli baseline": jaccard_matrix(df, runs, "baseline_pooled"),
    }
    n = len(runs)
    size = max(3.4, 0.55 * n + 1.6)
    fig, axes = new_figure(1, 2, panel_w=size + 0.5, panel_h=size)
    diag = np.eye(n, dtype=bool)
    off = np.concatenate([m.values[~diag] for m in mats.values()])
    vmax = 1.0 if np.nanmax(off) > 0.5 else float(np.ceil(np.nanmax(off) * 10) / 10)
    for i, (ax, (title, mat)) in enumerate(zip(axes[0], mats.items())):
        sns.heatmap(
            mat.values, mask=diag, ax=ax, vmin=0.0, vmax=vmax, cmap="viridis", square=True,
            annot=n <= 12, fmt=".3f", annot_kws={"fontsize": 7 if n > 6 else 8},
            xticklabels=ticks, yticklabels=ticks, linewidths=0.5, linecolor="white",
            cbar=True, cbar_kws={"label": "Jaccard |A∩B| / |A∪B|", "shrink": 0.8},
        )
        ax.set_title(title)
        ax.set_xlabel("run")
        ax.set_ylabel("run")
        ax.tick_params(axis="y", rotation=0)
        ax.grid(False)
    layer = df["layer"].dropna().unique() if "layer" in df.columns else []
    scope = f"decoder block {int(layer[0])}" if len(layer) == 1 else "all analysed matrices"
    n_t = df["n_tensors"].iloc[0] if "n_tensors" in df.columns else None
    extra = f"{scope}" + (f" ({int(n_t)} matrices)" if n_t is not None and pd.notna(n_t) else "") + "; diagonal left blank"
    finish(fig, ctx, subtitle_extra=extra, footnote=note)
    return fig


def fig2(ctx: Context):
    tensors = ctx.tensors()
    paths = ctx.files("masks")
    runs = ctx.pair_ids
    if len(runs) < 2:
        raise ArtifactInputError(f"{ctx.name}: consensus needs at least two runs, the spec lists {runs}")
    results = []
    with ExitStack() as stack:
        files = [stack.enter_context(MaskFile(p)) for p in paths]
        for tensor in tensors:
            shapes = set()
            densities = []
            for mf, p in zip(files, paths):
                if tensor not in mf.names:
                    raise ArtifactInputError(f"{ctx.name}: mask file {p} has no update mask for tensor {tensor!r}")
                shape = mf.shape(tensor)
                shapes.add(shape)
                densities.append(popcount(mf.bits(tensor)) / int(np.prod(shape)))
            if len(shapes) != 1:
                raise ArtifactInputError(f"{ctx.name}: runs' masks of {tensor!r} differ in shape: {sorted(shapes)}")
            shape = shapes.pop()
            if len(shape) != 2:
                raise ArtifactInputError(f"{ctx.name}: tensor {tensor!r} is not a matrix (shape {shape}) in {paths[0]}")
            counts = consensus_counts(files, tensor)
            results.append((tensor, counts, densities, consensus_histogram(counts, densities)))

    R = len(runs)
    fig, axes = new_figure(len(tensors), 2, panel_w=4.2, panel_h=3.3)
    cmap = sns.color_palette("rocket_r", as_cmap=True)
    for (tensor, counts, densities, hist), (ax_h, ax_b) in zip(results, axes):
        im = ax_h.imshow(counts.astype(np.float32) / R, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        cb = fig.colorbar(im, ax=ax_h, shrink=0.9)
        cb.set_label("consensus ratio (share of runs updating)")
        ax_h.set_title(f"{tensor.removeprefix('model.').removesuffix('.weight')}  {counts.shape[0]}×{counts.shape[1]}")
        ax_h.set_xlabel("input feature (column)")
        ax_h.set_ylabel("output unit (row)")
        ax_h.grid(False)

        c = hist["runs_updated"].to_numpy()
        ax_b.bar(c - 0.2, hist["observed"], 0.4, color="#D55E00")
        ax_b.bar(c + 0.2, hist["independent"], 0.4, color="white", edgecolor="#0072B2", hatch="///")
        ax_b.set_xticks(c)
        ax_b.set_xlabel(f"number of runs (of {R}) that updated the entry")
        ax_b.set_ylabel("share of entries")
        dens = ", ".join(f"{d:.2f}" for d in densities)
        ax_b.set_title(f"consensus count; run densities {dens}", fontsize=8.5)
        ax_b.grid(axis="x", visible=False)
    handles = [Patch(color="#D55E00"), Patch(facecolor="white", edgecolor="#0072B2", hatch="///")]
    labels = ["observed", "expected if runs were independent (Poisson-binomial of run densities)"]
    note = "runs: " + "\n          ".join(f"{ctx.label(p)} ({p})" for p in runs)
    finish(fig, ctx, subtitle_extra=f"{R} runs from one base", handles=handles, labels=labels,
           legend_cols=2, footnote=note)
    return fig
