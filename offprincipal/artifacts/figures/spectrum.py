"""Spectrum preservation and principal-subspace rotation, SFT vs RL (Fig. 4, 16, 17).

Left: the singular values of the spec's first tensor for the base and each fine-tuned
checkpoint, read from the spectra caches (``NAME::S``). Middle: NSS of every matrix by layer,
from ``geometry.csv``. Right: the largest principal angle between base and fine-tuned top-k
left (U) and right (V) singular subspaces of that tensor as k grows, from ``angles.csv``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from safetensors import safe_open

from offprincipal.artifacts.data.context import (
    ArtifactInputError,
    Context,
    check_file,
    finite_or_raise,
    layered,
    read_csv,
)
from offprincipal.artifacts.figures.style import colors, finish, integer_layer_axis, new_figure

BASE_COLOR = "#555555"


def singular_values(artifact: str, path: str, tensor: str, what: str) -> np.ndarray:
    """All singular values of ``tensor`` from a spectra cache (only its ``::S`` entry is read)."""
    check_file(artifact, path, what)
    key = f"{tensor}::S"
    with safe_open(str(path), framework="pt", device="cpu") as f:
        if key not in f.keys():
            raise ArtifactInputError(f"{artifact}: spectra file {path} ({what}) has no entry {key!r}")
        s = f.get_tensor(key).double().numpy()
    if s.size == 0 or not np.isfinite(s).all():
        raise ArtifactInputError(f"{artifact}: spectra file {path} ({what}) holds no finite singular values for {tensor!r}")
    return s


def render(ctx: Context):
    tensor = ctx.tensors()[0]
    pids = ctx.pair_ids
    base_files = ctx.files("base_spectra")
    ft_files = ctx.files("ft_spectra")
    geo_files = ctx.files("geometry")
    ang_files = ctx.files("angles")

    # left panel: one curve per distinct base checkpoint (the first pair's base first), one per fine-tune
    bases: dict[str, np.ndarray] = {}
    for pid, path in zip(pids, base_files):
        ckpt = ctx.pairs[pid].get("base", pid)
        if ckpt not in bases:
            bases[ckpt] = singular_values(ctx.name, path, tensor, f"base spectra of pair {pid}")
    fts = {pid: singular_values(ctx.name, path, tensor, f"fine-tuned spectra of pair {pid}")
           for pid, path in zip(pids, ft_files)}

    nss_by_pair = {}
    for pid, path in zip(pids, geo_files):
        df = layered(read_csv(ctx.name, path, ("name", "layer", "nss"), "geometry"), ctx.name, path)
        finite_or_raise(df["nss"], ctx.name, path, "nss")
        nss_by_pair[pid] = df[["layer", "nss"]]

    curves = {}
    for pid, path in zip(pids, ang_files):
        df = read_csv(ctx.name, path, ("name", "side", "k", "max_angle_deg"), "angles")
        df = df[df["name"] == tensor]
        for side in ("U", "V"):
            sub = df[df["side"] == side].sort_values("k")
            if sub.empty:
                raise ArtifactInputError(f"{ctx.name}: angles file {path} has no side-{side} rows for tensor {tensor!r}")
            curves[pid, side] = sub

    fig, axes = new_figure(1, 3, panel_w=3.8, panel_h=3.1)
    ax_s, ax_n, ax_a = axes[0]
    cols = colors(len(pids))
    handles, labels = [], []

    base_styles = ["-", "-.", ":"]
    for i, (ckpt, s) in enumerate(bases.items()):
        ax_s.plot(np.arange(1, s.size + 1), s, color=BASE_COLOR, lw=3.0, alpha=0.45,
                  ls=base_styles[i % len(base_styles)])
        handles.append(Line2D([], [], color=BASE_COLOR, lw=3.0, alpha=0.45, ls=base_styles[i % len(base_styles)]))
        labels.append(f"base checkpoint {ckpt} (singular values)")
    for pid, c in zip(pids, cols):
        s = fts[pid]
        ax_s.plot(np.arange(1, s.size + 1), s, color=c, lw=1.2, ls="--")
    ax_s.set_yscale("log")
    ax_s.set_xlabel("singular value index i")
    ax_s.set_ylabel(r"singular value $\sigma_i$ (log scale)")
    ax_s.set_title(f"spectrum of {short_name(tensor)}")

    n = len(pids)
    width = 0.6 / max(n, 1)
    layers = set()
    for j, (pid, c) in enumerate(zip(pids, cols)):
        df = nss_by_pair[pid]
        off = (j - (n - 1) / 2) * width
        ax_n.scatter(df["layer"] + off, df["nss"], s=10, color=c, alpha=0.75, lw=0)
        mean = df.groupby("layer")["nss"].mean()
        ax_n.plot(mean.index + off, mean.values, color=c, lw=1.0)
        layers.update(mean.index)
    ax_n.set_yscale("log")
    ax_n.set_ylabel("NSS per matrix (log scale)")
    ax_n.set_title("normalized spectrum shift, every matrix")
    integer_layer_axis(ax_n, layers)

    for pid, c in zip(pids, cols):
        for side, ls, marker in (("U", "-", "o"), ("V", "--", "s")):
            sub = curves[pid, side]
            ax_a.plot(sub["k"], sub["max_angle_deg"], color=c, ls=ls, marker=marker, ms=3.5, lw=1.3, clip_on=False, zorder=3)
    ax_a.set_xscale("log", base=2)
    ks = sorted({int(k) for sub in curves.values() for k in sub["k"]})
    ax_a.set_xticks(ks, [str(k) for k in ks])
    ax_a.set_xlabel("k (top-k singular subspace)")
    ax_a.set_ylabel("max principal angle (°)")
    ax_a.set_ylim(bottom=0)
    ax_a.set_title(f"rotation of {short_name(tensor)}")

    for pid, c in zip(pids, cols):
        handles.append(Line2D([], [], color=c, lw=1.3))
        labels.append(ctx.label(pid))
    handles += [Line2D([], [], color="k", ls="-", marker="o", ms=3.5), Line2D([], [], color="k", ls="--", marker="s", ms=3.5)]
    labels += ["U (left singular vectors; right panel)", "V (right singular vectors; right panel)"]
    finish(fig, ctx, subtitle_extra=f"matrix {tensor}", handles=handles, labels=labels, legend_cols=2)
    return fig


def short_name(tensor: str) -> str:
    """``model.layers.1.self_attn.q_proj.weight`` -> ``layers.1.self_attn.q_proj``."""
    s = tensor.removeprefix("model.").removeprefix("language_model.")
    return s.removesuffix(".weight")


fig4 = fig16 = fig17 = render
