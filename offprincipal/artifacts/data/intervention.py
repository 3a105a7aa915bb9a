"""The numbers of Fig. 6 (scrambling the base's geometry removes the update bias) and its claim.

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

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_json
from offprincipal.checkpoints.naming import classify
from offprincipal.interventions import is_permuted, is_rotated, load_record, map_mask_back
from offprincipal.metrics.masks import MaskFile

GROUPS = {"attention": ("q", "k", "v", "o"), "mlp": ("gate", "up", "down")}
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
