"""Every number of a compare report, computed from the pipeline's per-pair files.

One base, one or more fine-tunes (pairs). Per pair: sparsity overall, per module kind and per
layer × module kind, by the η rule and the absolute rule side by side, with each side's inf/NaN
counts (``updates.csv``); NSS, principal angles, mask overlaps with their random baselines and
update rank, per matrix and averaged per layer (× kind) (``geometry.csv``); principal-angle
curves over k (``angles.csv``); singular values of one matrix per layer of interest (the spectra
caches); the lineage check. With several fine-tunes: pairwise Jaccard of the η masks with the
Bernoulli baseline, and the consensus histogram (how many runs updated each entry) against the
one independent runs would give. Sparsities are fractions in [0, 1]; aggregates over tensors
are pooled (Σ changed / Σ numel); per-layer geometry is the unweighted mean over the layer's
matrices (as the paper's per-layer figures), skipping flagged matrices.
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from offprincipal.metrics.crossrun import jaccard_matrix, jaccard_table
from offprincipal.metrics.masks import MaskFile, popcount, unpack

#: module kinds in the order the report shows them
KIND_ORDER = ("q", "k", "v", "o", "gate", "up", "down", "expert", "router", "norm", "bias", "embedding", "other")
GEOMETRY_MEANS = (
    "nss", "max_angle_U_deg", "max_angle_V_deg",
    "overlap_princ", "density_princ", "overlap_low", "density_low", "overlap_princ_not_low", "density_princ_not_low",
    "update_rank_ratio", "update_density",
)  # fmt: skip


@dataclass(frozen=True)
class PairInputs:
    pair: str
    base: str  # checkpoint ids
    finetuned: str
    label: str
    updates: Path
    geometry: Path
    angles: Path
    masks: Path
    lineage: Path
    base_spectra: Path
    ft_spectra: Path


def _finite(x) -> float | None:
    """JSON-safe float: NaN/inf become null."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _finite(x.item())
    try:
        if pd.isna(x):
            return None
    except (TypeError, ValueError):
        pass
    return x


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: _finite(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def sparsity_rows(updates: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Pooled sparsity (η and absolute rule) and inf/NaN counts per group of ``by`` columns."""
    cols = ["numel", "changed_eta", "changed_abs", "nonfinite_base", "nonfinite_ft"]
    u = updates.copy()
    for c in ("nonfinite_base", "nonfinite_ft"):
        if c not in u:
            u[c] = 0
    g = u.groupby(by, dropna=False, sort=False)[cols].sum().reset_index() if by else u[cols].sum().to_frame().T
    g["tensors"] = u.groupby(by, dropna=False, sort=False).size().to_numpy() if by else len(u)
    g["sparsity_eta"] = 1.0 - g["changed_eta"] / g["numel"]
    g["sparsity_abs"] = 1.0 - g["changed_abs"] / g["numel"]
    for c in cols + ["tensors"]:
        g[c] = g[c].astype("int64")
    return g


def layer_kind_sparsity(updates: pd.DataFrame) -> pd.DataFrame:
    t = sparsity_rows(updates, ["layer", "kind"])
    t["layer"] = t["layer"].astype("Int64")
    t["_k"] = t["kind"].map(_kind_rank)
    t = t.sort_values(["layer", "_k"], na_position="last").drop(columns="_k").reset_index(drop=True)
    return t


def geometry_means(geometry: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    g = geometry.copy()
    g["flagged"] = g.get("flag", pd.Series("", index=g.index)).fillna("").astype(str).str.len() > 0
    cols = [c for c in GEOMETRY_MEANS if c in g]
    ok = g[~g["flagged"]]
    if by:
        means = ok.groupby(by, dropna=False, sort=False)[cols].mean().reset_index()
        counts = g.groupby(by, dropna=False, sort=False).agg(matrices=("name", "size"), flagged=("flagged", "sum")).reset_index()
        out = counts.merge(means, on=by, how="left")
    else:
        out = pd.DataFrame([{"matrices": len(g), "flagged": int(g["flagged"].sum()), **ok[cols].mean().to_dict()}])
    out["matrices"] = out["matrices"].astype("int64")
    out["flagged"] = out["flagged"].astype("int64")
    return out


def angle_means(angles: pd.DataFrame) -> pd.DataFrame:
    """Mean over matrices of the largest principal angle at each k, per side (U, V)."""
    if angles.empty:
        return pd.DataFrame(columns=["side", "k", "max_angle_deg", "matrices"])
    return (angles.groupby(["side", "k"]).agg(max_angle_deg=("max_angle_deg", "mean"), matrices=("name", "size"))
            .reset_index())


def spectra_samples(pi: PairInputs, geometry: pd.DataFrame, limit: int = 3) -> list[dict]:
    """Singular values of base and fine-tune for a few matrices: the first, middle and last
    layer's largest-NSS matrix (unflagged), for the spectrum curves."""
    from offprincipal.analysis import SpectraFile

    g = geometry[(geometry.get("flag", pd.Series("", index=geometry.index)).fillna("") == "") & geometry["nss"].notna()]
    if g.empty:
        return []
    layers = sorted(int(x) for x in g["layer"].dropna().unique())
    chosen = []
    for layer in dict.fromkeys([layers[0], layers[len(layers) // 2], layers[-1]] if layers else []):
        rows = g[g["layer"] == layer]
        chosen.append(rows.loc[rows["nss"].idxmax(), "name"])
    chosen = chosen[:limit]
    s0, s1 = SpectraFile(pi.base_spectra), SpectraFile(pi.ft_spectra)
    out = []
    for name in chosen:
        if name not in s0 or name not in s1:
            continue
        a, b = s0.get(name)[0].double().numpy(), s1.get(name)[0].double().numpy()
        out.append({"name": name, "base": a.tolist(), "finetuned": b.tolist(),
                    "nss": float(np.linalg.norm(b - a) / np.linalg.norm(a))})
    return out


def pair_numbers(pi: PairInputs) -> tuple[dict, dict[str, pd.DataFrame]]:
    updates = pd.read_csv(pi.updates)
    geometry = pd.read_csv(pi.geometry)
    angles = pd.read_csv(pi.angles)
    lineage = json.loads(Path(pi.lineage).read_text())
    overall = records(sparsity_rows(updates, []))[0]
    by_kind = sparsity_rows(updates, ["kind"])
    by_kind = by_kind.assign(_k=by_kind["kind"].map(_kind_rank)).sort_values("_k").drop(columns="_k")
    lk = layer_kind_sparsity(updates)
    geo_layer = geometry_means(geometry, ["layer"]).sort_values("layer").reset_index(drop=True)
    geo_lk = geometry_means(geometry, ["layer", "kind"])
    geo_lk = geo_lk.assign(_k=geo_lk["kind"].map(_kind_rank)).sort_values(["layer", "_k"]).drop(columns="_k").reset_index(drop=True)
    flag_col = geometry["flag"].fillna("") if "flag" in geometry else pd.Series("", index=geometry.index)
    flagged = records(geometry.loc[flag_col != "", ["name", "layer", "kind", "flag"]])
    nonfinite = records(updates.loc[(updates.get("nonfinite_base", 0) > 0) | (updates.get("nonfinite_ft", 0) > 0),
                                    ["name", "nonfinite_base", "nonfinite_ft"]]) if "nonfinite_base" in updates else []
    numbers = {
        "pair": pi.pair,
        "base": pi.base,
        "finetuned": pi.finetuned,
        "label": pi.label,
        "lineage": lineage,
        "sparsity": {
            "overall": overall,
            "by_kind": records(by_kind),
            "by_layer_kind": records(lk),
        },
        "geometry": {
            "overall": records(geometry_means(geometry, []))[0],
            "by_layer": records(geo_layer),
            "by_layer_kind": records(geo_lk),
            "angle_curves": records(angle_means(angles)),
            "flagged": flagged,
        },
        "nonfinite_tensors": nonfinite,
        "spectra": spectra_samples(pi, geometry),
        "tensors": records(updates),  # updates.csv, one row per tensor
        "matrices": records(geometry),  # geometry.csv, one row per matrix
    }
    tables = {
        "sparsity_layers": lk.assign(pair=pi.pair),
        "geometry_layers": geo_lk.assign(pair=pi.pair),
    }
    return numbers, tables


def crossrun_numbers(pairs: list[PairInputs], kinds: list[str] | None = None) -> tuple[dict | None, dict[str, pd.DataFrame]]:
    """Jaccard matrix and consensus histogram over the fine-tunes' masks (None for one pair)."""
    if len(pairs) < 2:
        return None, {}
    from offprincipal.checkpoints.naming import classify

    with ExitStack() as stack:
        files = {p.pair: stack.enter_context(MaskFile(p.masks)) for p in pairs}
        names = sorted(set.intersection(*(set(f.names) for f in files.values())))
        names = [n for n in names if kinds is None or classify(n).kind in kinds]
        table = jaccard_table(files, names)
        runs = [p.pair for p in pairs]
        observed = np.zeros(len(runs) + 1)
        expected = np.zeros(len(runs) + 1)
        total = 0
        for n in names:
            shape = files[runs[0]].shape(n)
            size = int(np.prod(shape))
            counts = np.zeros(size, np.uint8)
            dens = []
            for r in runs:
                bits = files[r].bits(n)
                counts += unpack(bits, (size,))
                dens.append(popcount(bits) / size)
            observed += np.bincount(counts, minlength=len(runs) + 1)
            poly = np.array([1.0])
            for d in dens:
                poly = np.convolve(poly, [1.0 - d, d])
            expected += size * poly
            total += size
        consensus = pd.DataFrame({"runs_updated": np.arange(len(runs) + 1), "observed": observed / total,
                                  "independent": expected / total})
        maps = consensus_maps(files, runs, names)
    jm = jaccard_matrix(table, runs, "jaccard_pooled")
    bm = jaccard_matrix(table, runs, "baseline_pooled")
    numbers = {
        "runs": runs,
        "tensors": len(names),
        "jaccard": records(table),
        "jaccard_matrix": jm.values.tolist(),
        "baseline_matrix": bm.values.tolist(),
        "mean_jaccard": float(table["jaccard_pooled"].mean()),
        "mean_baseline": float(table["baseline_pooled"].mean()),
        "consensus": records(consensus),
        "consensus_maps": maps,
    }
    return numbers, {"jaccard": table, "consensus": consensus}


MAP_CELLS = 96  # a consensus map is block-averaged to at most this many cells a side


def consensus_maps(files: dict, runs: list[str], names: list[str]) -> list[dict]:
    """Consensus ratio (share of runs that updated each entry) of two matrices -- the middle
    layer's q and down projections, where present -- block-averaged for display."""
    from offprincipal.checkpoints.naming import classify

    mats = [n for n in names if len(files[runs[0]].shape(n)) == 2 and classify(n).layer is not None]
    if not mats:
        return []
    layers = sorted({classify(n).layer for n in mats})
    mid = layers[len(layers) // 2]
    picks = [n for n in mats if classify(n).layer == mid and classify(n).kind in ("q", "down")] or mats[:1]
    out = []
    for n in picks[:2]:
        shape = files[runs[0]].shape(n)
        ratio = sum(files[r].mask(n).astype(np.float32) for r in runs) / len(runs)
        out.append({"name": n, "shape": list(shape), "ratio": _block_mean(ratio, MAP_CELLS).round(4).tolist()})
    return out


def _block_mean(a: np.ndarray, cells: int) -> np.ndarray:
    rows = np.array_split(np.arange(a.shape[0]), min(cells, a.shape[0]))
    cols = np.array_split(np.arange(a.shape[1]), min(cells, a.shape[1]))
    return np.array([[a[np.ix_(r, c)].mean() for c in cols] for r in rows])


def layer_sparsity(updates: pd.DataFrame) -> pd.DataFrame:
    t = sparsity_rows(updates[updates["layer"].notna()], ["layer"])
    t["layer"] = t["layer"].astype("int64")
    return t.sort_values("layer").reset_index(drop=True)


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _relation(observed: float | None, baseline: float | None, margin: float = 0.01) -> str:
    if observed is None or baseline is None:
        return "undefined (nothing was updated)"
    if observed < baseline - margin:
        return "below"
    if observed > baseline + margin:
        return "above"
    return "at (within 1 percentage point of)"


def pair_sentences(n: dict, updates: pd.DataFrame, report_k: int) -> list[str]:
    """The summary of one pair, in sentences computed from its numbers."""
    s = n["sparsity"]["overall"]
    out = []
    if n["lineage"].get("warning"):
        out.append("Warning: " + n["lineage"]["warning"])
    params = s["numel"]
    size = f"{params / 1e9:.2f} G" if params >= 1e8 else f"{params / 1e6:.2f} M" if params >= 1e5 else f"{params:,}"
    if s["changed_eta"] == 0:
        out.append(f"{n['finetuned']} is bitwise identical to {n['base']} in bf16: all {size} parameters are unchanged.")
        return out
    out.append(
        f"{n['finetuned']} left {_pct(s['sparsity_eta'])} of its {size} parameters bitwise unchanged in bf16 against "
        f"{n['base']} (the paper's η rule); the absolute |Δw| ≤ 1e-5 rule would call {_pct(s['sparsity_abs'])} unchanged."
    )
    big = [k for k in n["sparsity"]["by_kind"] if k["numel"] >= 0.01 * params]
    layers = layer_sparsity(updates)
    if len(big) > 1 and len(layers) > 1:
        lo, hi = min(big, key=lambda r: r["sparsity_eta"]), max(big, key=lambda r: r["sparsity_eta"])
        llo = layers.loc[layers["sparsity_eta"].idxmin()]
        lhi = layers.loc[layers["sparsity_eta"].idxmax()]
        out.append(
            f"By module kind, sparsity ranges from {_pct(lo['sparsity_eta'])} ({lo['kind']}) to "
            f"{_pct(hi['sparsity_eta'])} ({hi['kind']}); by layer, from {_pct(llo['sparsity_eta'])} (layer "
            f"{int(llo['layer'])}) to {_pct(lhi['sparsity_eta'])} (layer {int(lhi['layer'])})."
        )
    g = n["geometry"]["overall"]
    by_layer = [r for r in n["geometry"]["by_layer"] if r.get("nss") is not None and r.get("layer") is not None]
    if g.get("nss") is not None:
        worst = max(by_layer, key=lambda r: r["nss"]) if by_layer else None
        out.append(
            f"The spectrum moved by a mean NSS of {g['nss']:.2g} over {g['matrices'] - g['flagged']} matrices"
            + (f" (largest layer mean {worst['nss']:.2g}, layer {int(worst['layer'])})" if worst else "")
            + f", and the largest principal angle between the top-{report_k} singular subspaces averages "
            f"{g['max_angle_U_deg']:.2g}° (left, U) and {g['max_angle_V_deg']:.2g}° (right, V)."
        )
    if g.get("overlap_princ") is not None and g.get("density_princ") is not None:
        out.append(
            f"Of the updated entries, {_pct(g['overlap_princ'])} lie in the principal mask, "
            f"{_relation(g['overlap_princ'], g['density_princ'])} the {_pct(g['density_princ'], 0)} that updates "
            f"ignoring it would give, and {_pct(g['overlap_low'])} in the low-magnitude mask, "
            f"{_relation(g['overlap_low'], g['density_low'])} its {_pct(g['density_low'], 0)} baseline."
        )
    if g.get("update_rank_ratio") is not None:
        out.append(f"The update ΔW has on average {_pct(g['update_rank_ratio'], 0)} of full rank.")
    if n["geometry"]["flagged"]:
        names = ", ".join(f["name"] for f in n["geometry"]["flagged"][:3])
        more = len(n["geometry"]["flagged"]) - 3
        out.append(
            f"{len(n['geometry']['flagged'])} matrices were left out of the spectral metrics (inf/NaN or a failed "
            f"SVD): {names}" + (f" and {more} more" if more > 0 else "") + "."
        )
    if n["nonfinite_tensors"]:
        out.append(f"{len(n['nonfinite_tensors'])} tensors hold inf/NaN entries; they count as changed only where the bf16 codes differ.")
    return out


def crossrun_sentence(c: dict) -> str:
    r = len(c["runs"])
    all_runs = c["consensus"][-1]
    ratio = c["mean_jaccard"] / c["mean_baseline"] if c["mean_baseline"] else float("nan")
    return (
        f"Across the {r} fine-tunes, the update masks overlap with a mean pairwise Jaccard of {c['mean_jaccard']:.2f} "
        f"against {c['mean_baseline']:.2f} for independent masks of the same densities (ratio {ratio:.2f}); "
        f"{_pct(all_runs['observed'], 2)} of entries were updated by {'both' if r == 2 else f'all {r}'}, against "
        f"{_pct(all_runs['independent'], 2)} "
        "if the runs were independent."
    )
