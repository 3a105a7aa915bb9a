"""Scrambling the base's geometry removes the update bias (Fig. 6).

The spec's pairs are, in this order: a reference run A (base → A), an independent run B
from the same base (base → B) and a run C from a function-preserving intervened base
(intervened base → C). The intervened base's manifest names its ``intervention_record``
(:mod:`offprincipal.interventions`). Per decoder block and module group:

* Jaccard(A, B) — the consistency level of two runs from one base;
* Jaccard(A, C) — C's masks in base coordinates: PERMUTE'd tensors are mapped back with
  :func:`~offprincipal.interventions.map_mask_back`; ROTATE'd tensors (``v_proj``,
  ``o_proj``) have no elementwise correspondence and are compared as stored;
* the independent-Bernoulli baselines of both comparisons (pooled as in
  :func:`offprincipal.metrics.crossrun.jaccard_table`: Σ n·pq / Σ n·(p+q−pq)).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from offprincipal.checkpoints.naming import classify
from offprincipal.figures.common import ArtifactInputError, Context, finish, integer_layer_axis, new_figure
from offprincipal.figures.runlog import read_json
from offprincipal.interventions import is_permuted, is_rotated, load_record, map_mask_back
from offprincipal.metrics.masks import MaskFile

GROUPS = {"attention": ("q", "k", "v", "o"), "mlp": ("gate", "up", "down")}
GROUP_TITLES = {"attention": "attention projections (q, k, v, o)", "mlp": "MLP projections (gate, up, down)"}
KIND_GROUP = {k: g for g, kinds in GROUPS.items() for k in kinds}


def intervention_kind(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return ""
    parts = [w for w, on in (("rotate", entry.get("rotate")), ("permute", entry.get("permute"))) if on]
    return "+".join(parts)


def _names(m) -> list[str]:
    return list(m.names) if isinstance(m, MaskFile) else list(m)


def _mask(m, name: str) -> np.ndarray:
    return np.asarray(m.mask(name) if isinstance(m, MaskFile) else m[name], dtype=bool)


def intervened_overlap(masks_a, masks_b, masks_c, record: Mapping[str, Any],
                       names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per decoder layer and module group (attention / mlp): pooled Jaccard of the update
    masks A∩B/A∪B and A∩C'/A∪C' (C' = C in base coordinates), with their Bernoulli
    baselines, and what the intervention did to the layer.

    ``masks_*``: :class:`~offprincipal.metrics.masks.MaskFile` or ``{name: bool array}``.
    ``names``: the tensors to use (default: the q/k/v/o/gate/up/down matrices of decoder
    layers present in all three). Columns: ``layer, group, n_tensors, n_mapped_back,
    n_rotated, jaccard_ab, baseline_ab, jaccard_ac, baseline_ac, intervened, intervention``.
    """
    if names is None:
        common = set(_names(masks_a)) & set(_names(masks_b)) & set(_names(masks_c))
        names = sorted(n for n in common if classify(n).kind in KIND_GROUP and classify(n).layer is not None)
    if not names:
        raise ValueError("no q/k/v/o/gate/up/down matrices of a decoder layer shared by the three runs")
    entries = {int(e["layer"]): e for e in record.get("layers", [])}
    acc: dict[tuple[int, str], dict[str, float]] = {}
    for name in names:
        info = classify(name)
        if info.layer is None or info.kind not in KIND_GROUP:
            raise ValueError(f"{name}: not a q/k/v/o/gate/up/down matrix of a decoder layer")
        a, b, c = _mask(masks_a, name), _mask(masks_b, name), _mask(masks_c, name)
        if not (a.shape == b.shape == c.shape):
            raise ValueError(f"{name}: mask shapes differ: {a.shape}, {b.shape}, {c.shape}")
        rotated = is_rotated(name, record)
        mapped = (not rotated) and is_permuted(name, record)
        if mapped:
            c = map_mask_back(c, name, record)
        n = a.size
        slot = acc.setdefault((info.layer, KIND_GROUP[info.kind]), dict.fromkeys(
            ("n_tensors", "n_mapped_back", "n_rotated", "inter_ab", "union_ab", "inter_ac", "union_ac",
             "exp_inter_ab", "exp_union_ab", "exp_inter_ac", "exp_union_ac"), 0.0))
        slot["n_tensors"] += 1
        slot["n_mapped_back"] += int(mapped)
        slot["n_rotated"] += int(rotated)
        pa, pb, pc = a.mean(), b.mean(), c.mean()
        for tag, other, q in (("ab", b, pb), ("ac", c, pc)):
            slot[f"inter_{tag}"] += int((a & other).sum())
            slot[f"union_{tag}"] += int((a | other).sum())
            slot[f"exp_inter_{tag}"] += n * pa * q
            slot[f"exp_union_{tag}"] += n * (pa + q - pa * q)
    rows = []
    for (layer, group), s in sorted(acc.items()):
        def ratio(x, y):
            return x / y if y else float("nan")

        e = entries.get(layer)
        rows.append({
            "layer": layer,
            "group": group,
            "n_tensors": int(s["n_tensors"]),
            "n_mapped_back": int(s["n_mapped_back"]),
            "n_rotated": int(s["n_rotated"]),
            "jaccard_ab": ratio(s["inter_ab"], s["union_ab"]),
            "baseline_ab": ratio(s["exp_inter_ab"], s["exp_union_ab"]),
            "jaccard_ac": ratio(s["inter_ac"], s["union_ac"]),
            "baseline_ac": ratio(s["exp_inter_ac"], s["exp_union_ac"]),
            "intervened": e is not None,
            "intervention": intervention_kind(e),
        })
    return pd.DataFrame(rows)


def intervention_record(ctx: Context) -> tuple[dict, str]:
    """The intervention record of the spec's third pair's base (checked against the three pairs) and its path."""
    pids = ctx.pair_ids
    if len(pids) != 3:
        raise ArtifactInputError(
            f"{ctx.name}: the spec must list three pairs (reference run, independent run, run from the "
            f"intervened base), got {pids}"
        )
    a, b, c = (ctx.pairs[p] for p in pids)
    if a.get("base") != b.get("base"):
        raise ArtifactInputError(f"{ctx.name}: the reference and independent runs start from different bases "
                                 f"({a.get('base')!r}, {b.get('base')!r})")
    if c.get("base") == a.get("base"):
        raise ArtifactInputError(f"{ctx.name}: the third pair ({pids[2]}) must start from the intervened base, "
                                 f"not from {a.get('base')!r}")
    base_manifests = ctx.files("base_manifests")
    path = base_manifests[2]
    m = read_json(ctx.name, path, "checkpoint manifest")
    rec_path = m.get("intervention_record")
    if not rec_path:
        raise ArtifactInputError(f"{ctx.name}: input file {path} (checkpoint manifest) names no intervention_record; "
                                 f"pair {pids[2]} must start from an intervened base")
    if m.get("from") and a.get("base") and m["from"] != a.get("base"):
        raise ArtifactInputError(f"{ctx.name}: input file {path} (checkpoint manifest): the intervened base was made "
                                 f"from {m['from']!r}, the reference run starts from {a.get('base')!r}")
    if not Path(rec_path).is_file():
        raise ArtifactInputError(f"{ctx.name}: input file {rec_path} (intervention record, named by {path}) does not exist")
    try:
        record = load_record(rec_path)
    except ValueError as err:
        raise ArtifactInputError(f"{ctx.name}: input file {rec_path} (intervention record): {err}") from None
    return record, rec_path


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
