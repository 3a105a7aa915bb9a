"""Where updates land over training: row and column update ratios (Fig. 3 and Fig. 14).

The pairs are base → successive checkpoints of ONE run. For each chosen matrix, the share
of updated entries in each row (output unit) and each column (input feature) of the pair's
bit-packed update mask (:func:`offprincipal.metrics.crossrun.row_col_ratios`), one heatmap
row per checkpoint; below, the overall update sparsity of each checkpoint (updates.csv,
all stored parameters) and that of each chosen matrix. Checkpoint steps come from the
fine-tuned checkpoints' manifests (``step``: N or ``final``).
"""

from __future__ import annotations

from contextlib import ExitStack

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_json
from offprincipal.artifacts.data.runs import checkpoint_step, read_updates, sparsity
from offprincipal.artifacts.figures.style import colors, finish
from offprincipal.metrics.crossrun import row_col_ratios
from offprincipal.metrics.masks import MaskFile, popcount


def _short(tensor: str) -> str:
    return tensor.removeprefix("model.").removesuffix(".weight")


def _checkpoints(ctx: Context) -> list[tuple[str, int | None, str]]:
    """(pair, step, tick label) in training order; checks the pairs share base and run."""
    pids = ctx.pair_ids
    bases = {ctx.pairs[p].get("base") for p in pids}
    if len(bases) != 1:
        raise ArtifactInputError(
            f"{ctx.name}: the pairs must share one base (checkpoints of one run), got {sorted(map(str, bases))}"
        )
    manifests = ctx.files("ft_manifests")
    run_names = {read_json(ctx.name, m, "checkpoint manifest").get("run") for m in manifests}
    run_names.discard(None)
    if len(run_names) > 1:
        raise ArtifactInputError(f"{ctx.name}: the fine-tuned checkpoints come from several runs {sorted(run_names)}; "
                                 "the figure follows one run")
    out = []
    for pid, m in zip(pids, manifests):
        step = checkpoint_step(ctx, m)
        out.append((pid, step, f"step {step}" if step is not None else ctx.pairs[pid].get("finetuned", pid)))
    if all(s is not None for _, s, _ in out):
        steps = [s for _, s, _ in out]
        if len(set(steps)) != len(steps):
            raise ArtifactInputError(f"{ctx.name}: two pairs are the same checkpoint step ({steps})")
        out.sort(key=lambda t: t[1])
    return out


def row_col(ctx: Context):
    tensors = ctx.tensors()
    ckpts = _checkpoints(ctx)
    order = {pid: i for i, pid in enumerate(ctx.pair_ids)}
    mask_paths = ctx.files("masks")
    update_paths = ctx.files("updates")
    ratios: dict[str, tuple[np.ndarray, np.ndarray, list[float]]] = {}
    with ExitStack() as stack:
        files = {pid: stack.enter_context(MaskFile(mask_paths[order[pid]])) for pid, _, _ in ckpts}
        for tensor in tensors:
            rows, cols, dens, shapes = [], [], [], set()
            for pid, _, _ in ckpts:
                mf = files[pid]
                if tensor not in mf.names:
                    raise ArtifactInputError(f"{ctx.name}: mask file {mf.path} has no update mask for tensor {tensor!r}")
                shape = mf.shape(tensor)
                if len(shape) != 2:
                    raise ArtifactInputError(f"{ctx.name}: tensor {tensor!r} is not a matrix (shape {shape}) in {mf.path}")
                shapes.add(shape)
                r, c = row_col_ratios(mf.mask(tensor))
                rows.append(r)
                cols.append(c)
                dens.append(popcount(mf.bits(tensor)) / int(np.prod(shape)))
            if len(shapes) != 1:
                raise ArtifactInputError(
                    f"{ctx.name}: the checkpoints' masks of {tensor!r} differ in shape: {sorted(shapes)}"
                )
            ratios[tensor] = (np.stack(rows), np.stack(cols), dens)
    overall = []
    for pid, _, _ in ckpts:
        df = read_updates(ctx, update_paths[order[pid]])
        overall.append(100.0 * sparsity(df))

    n = len(tensors)
    k = len(ckpts)
    heat_h = max(1.5, 0.3 * k + 0.9)
    fig = plt.figure(figsize=(10.0, n * heat_h + 2.5))
    grid = fig.add_gridspec(n + 1, 2, height_ratios=[heat_h] * n + [2.3])
    ticks = [lab for _, _, lab in ckpts]
    for i, tensor in enumerate(tensors):
        row_r, col_r, _ = ratios[tensor]
        vmax = float(max(row_r.max(), col_r.max()))
        vmax = 1.0 if vmax > 0.5 or vmax == 0 else float(np.ceil(vmax * 20) / 20)
        for j, (mat, side, xl) in enumerate(((row_r, "row", "row index (output unit)"),
                                             (col_r, "column", "column index (input feature)"))):
            ax = fig.add_subplot(grid[i, j])
            im = ax.imshow(mat, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=vmax)
            cb = fig.colorbar(im, ax=ax, pad=0.02, fraction=0.05)
            cb.set_label(f"updated share of {side}", fontsize=7.5)
            ax.set_yticks(range(k), ticks)
            ax.set_xlabel(xl)
            ax.set_title(f"{_short(tensor)} [{row_r.shape[1]}×{col_r.shape[1]}]: {side}-wise update ratio", fontsize=9)
            ax.grid(False)
    ax = fig.add_subplot(grid[n, :])
    x_steps = [s for _, s, _ in ckpts]
    numeric = all(s is not None for s in x_steps)
    x = np.array(x_steps if numeric else range(k), dtype=float)
    ax.plot(x, overall, color="k", marker="o", lw=1.8, ms=4.5)
    for xi, v in zip(x, overall):
        ax.annotate(f"{v:.1f}", (xi, v), xytext=(0, 5), textcoords="offset points", ha="center", fontsize=7)
    cols = colors(n)
    for c, tensor in zip(cols, tensors):
        ax.plot(x, [100.0 * (1 - d) for d in ratios[tensor][2]], color=c, marker="s", ms=3, lw=1.0, ls="--")
    ax.set_xticks(x, ticks if not numeric else [str(s) for s in x_steps])
    ax.set_xlabel("training step" if numeric else "checkpoint")
    ax.set_ylabel("update sparsity (%)")
    ax.set_title("update sparsity per checkpoint (1 − updated / all entries)", fontsize=9)
    lo = min([*overall, *[100.0 * (1 - d) for t in tensors for d in ratios[t][2]]])
    ax.set_ylim(max(0.0, lo - 0.15 * (100 - lo) - 1), 100.5 if lo > 50 else 102)
    handles = [Line2D([], [], color="k", marker="o", lw=1.8, ms=4.5)]
    labels = ["all stored parameters (updates.csv)"]
    handles += [Line2D([], [], color=c, marker="s", ms=3, lw=1.0, ls="--") for c in cols]
    labels += [f"{_short(t)} only" for t in tensors]
    names = {read_json(ctx.name, m, "checkpoint manifest").get("run") for m in ctx.files("ft_manifests")} - {None}
    run = f"run '{names.pop()}'" if names else f"checkpoints of {ctx.label(ckpts[-1][0])}"
    finish(fig, ctx, subtitle_extra=f"{run} against its base {ctx.pairs[ckpts[0][0]].get('base', '')!r}; "
                                    "η-rule (bf16) update masks",
           handles=handles, labels=labels, legend_cols=min(3, len(labels)))
    return fig


fig3 = fig14 = row_col
