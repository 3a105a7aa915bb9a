"""The numbers of the UV-restoration family (Jin et al., "RL Is Neither a Panacea Nor a Mirage",
arXiv 2508.16546), shared by its figures, its tables and the claims about it.

ID accuracy is the artifact's ``suite`` (its only task, or the mean over its tasks), OOD the
``ood_suite`` (the mean over its tasks, the evaluation stage's "average" row); intervals are
95% bootstrap over problems, differences paired (``eval/paired/{artifact}.csv`` and
``.ood.csv``). "Recovered" is ``(x - SFT) / (base - SFT)``: the share of the gap between SFT
and base that x closes (NaN where SFT equals the base).

Each ``*_rows`` function returns a DataFrame, which the tests check against independent
computations.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from offprincipal.artifacts.data import accuracy as acc
from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_csv
from offprincipal.evaluation.stage import PAIRED_COLUMNS

ROTATION_COLUMNS = ("tensor", "layer", "index", "left_deg", "right_deg", "rel_sv_change", "left_window_deg",
                    "right_window_deg")
SIDES = {"id": ("base_eval", "ft_eval", "paired"), "ood": ("base_eval_ood", "ft_eval_ood", "paired_ood")}


def results_of(ctx: Context, side: str, key: str) -> list[dict]:
    """The evaluation of each pair's base or fine-tuned checkpoint under input key ``key``."""
    role = "base" if side == "base" else "finetuned"
    return [acc.read_evaluation(ctx, f, ctx.pairs[pid][role]) for pid, f in zip(ctx.pair_ids, ctx.files(key))]


def paired_of(ctx: Context, key: str) -> pd.DataFrame:
    """The paired accuracy comparisons under input key ``key`` (``paired`` or ``paired_ood``)."""
    (path,) = ctx.files(key, per_pair=False)
    return read_csv(ctx.name, path, PAIRED_COLUMNS, f"paired accuracy comparisons ({key})")


def require_ood(ctx: Context) -> None:
    """Fail unless the artifact was given out-of-distribution evaluations (its ``ood_suite``)."""
    if "ft_eval_ood" not in ctx.inputs:
        raise ArtifactInputError(f"{ctx.name}: no out-of-distribution evaluations were given: set "
                                 f"artifacts.{ctx.name}.ood_suite in the config")


def ft_manifest(ctx: Context, i: int) -> dict:
    """The manifest of the ``i``-th pair's fine-tuned checkpoint."""
    path = ctx.files("ft_manifests")[i]
    try:
        return json.loads(open(path).read())
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactInputError(f"{ctx.name}: input file {path} (checkpoint manifest): {err}") from None


def recovered(x: float, sft: float, base: float) -> float:
    """Share of the SFT-to-base gap that ``x`` closes: ``(x - sft) / (base - sft)``."""
    return (x - sft) / (base - sft) if base != sft else float("nan")


def restoration_rows(ctx: Context) -> pd.DataFrame:
    """One row per checkpoint shown: the base, the reference (SFT) checkpoint and each restored
    one, with ``mode`` / ``top_p`` / ``layers`` from its manifest, ID and OOD pass@1 with
    intervals, the paired difference from the SFT checkpoint and the recovered share."""
    require_ood(ctx)
    ref_pid = ctx.spec.get("reference")
    if not ref_pid:
        raise ArtifactInputError(f"{ctx.name}: name the SFT checkpoint's pair as artifacts.{ctx.name}.reference")
    pids = ctx.pair_ids
    sft = ctx.pairs[ref_pid]["finetuned"]
    rows = []
    per_side = {}
    for side, (bkey, fkey, pkey) in SIDES.items():
        per_side[side] = (results_of(ctx, "base", bkey), results_of(ctx, "ft", fkey), paired_of(ctx, pkey))
    bases = {ctx.pairs[p]["base"] for p in pids}
    if len(bases) != 1:
        raise ArtifactInputError(f"{ctx.name}: every pair must share one base (restored against it), got {sorted(bases)}")
    (base,) = bases
    entries = [("base", base, None)] + [("ft", ctx.pairs[p]["finetuned"], i) for i, p in enumerate(pids)]
    for role, ckpt, i in entries:
        row = {"checkpoint": ckpt, "role": "base" if role == "base" else ("sft" if ckpt == sft else "restored")}
        if i is not None and ckpt != sft:
            m = ft_manifest(ctx, i)
            if m.get("source") != "restored":
                raise ArtifactInputError(f"{ctx.name}: checkpoint {ckpt!r} of pair {pids[i]!r} is not a restored "
                                         f"checkpoint (its manifest's source is {m.get('source')!r})")
            if m.get("finetuned") != sft or m.get("base") != base:
                raise ArtifactInputError(f"{ctx.name}: restored checkpoint {ckpt!r} restores {m.get('finetuned')!r} "
                                         f"towards {m.get('base')!r}, not the reference {sft!r} towards {base!r}")
            rec = m["recipe"]
            row.update(mode=rec["mode"], top_p=rec["top_p"] if rec["mode"] == "top_p" else None, layers=rec["layers"])
        elif row["role"] == "sft":
            row.update(mode="none", top_p=0.0, layers=None)
        else:
            row.update(mode="base", top_p=None, layers=None)
        for side, (base_res, ft_res, paired) in per_side.items():
            a = acc.accuracy(base_res[0] if i is None else ft_res[i])
            row.update({f"{side}": a.value, f"{side}_lo": a.lo, f"{side}_hi": a.hi})
            if row["role"] == "restored":
                d = acc.difference(ctx, paired, ckpt, sft)
                row.update({f"{side}_vs_sft": d.diff, f"{side}_vs_sft_lo": d.lo, f"{side}_vs_sft_hi": d.hi})
        rows.append(row)
    out = pd.DataFrame(rows)
    for side in SIDES:
        b, s = float(out.loc[out.role == "base", side].iloc[0]), float(out.loc[out.role == "sft", side].iloc[0])
        out[f"{side}_recovered"] = [recovered(v, s, b) if r == "restored" else np.nan for v, r in zip(out[side], out.role)]
    return out


def rotation_curves(ctx: Context) -> pd.DataFrame:
    """Per pair and index: the mean over matrices of each rotation column (``rel_sv_change`` as
    the mean of its absolute value), and the number of matrices averaged."""
    frames = []
    for pid, path in zip(ctx.pair_ids, ctx.files("rotation")):
        df = read_csv(ctx.name, path, ROTATION_COLUMNS, "per-index rotation table")
        df = df.assign(abs_rel_sv_change=df["rel_sv_change"].abs())
        g = df.groupby("index")
        cols = ["left_deg", "right_deg", "left_window_deg", "right_window_deg", "abs_rel_sv_change"]
        out = g[cols].mean()
        out["n_matrices"] = g["tensor"].nunique()
        frames.append(out.reset_index().assign(pair=pid))
    return pd.concat(frames, ignore_index=True)


def rotation_accuracy_rows(ctx: Context) -> pd.DataFrame:
    """ID / OOD pass@1 of each pair's fine-tuned checkpoint and of each distinct base."""
    require_ood(ctx)
    rows: dict[str, dict] = {}
    for side, (bkey, fkey, _) in SIDES.items():
        for role, key in (("base", bkey), ("ft", fkey)):
            for pid, res in zip(ctx.pair_ids, results_of(ctx, role, key)):
                ckpt = ctx.pairs[pid]["base" if role == "base" else "finetuned"]
                a = acc.accuracy(res)
                rows.setdefault(ckpt, {"checkpoint": ckpt}).update({side: a.value, f"{side}_lo": a.lo, f"{side}_hi": a.hi})
    return pd.DataFrame(list(rows.values()))


def sft_then_rl_rows(ctx: Context) -> pd.DataFrame:
    """One row per SFT pair (kind ``sft``): its SFT length (the step of its checkpoint; a final
    checkpoint's is the run's ``steps``), ID / OOD pass@1 of the base, the SFT checkpoint and
    the RL pair starting from it (kind ``rl``, base = that SFT checkpoint), RL's paired gain
    over its SFT start and the share of the SFT-to-base gap RL recovers."""
    require_ood(ctx)
    pids = ctx.pair_ids
    sft_pids = [p for p in pids if ctx.pairs[p].get("kind") == "sft"]
    rl_of = {ctx.pairs[p]["base"]: p for p in pids if ctx.pairs[p].get("kind") == "rl"}
    if not sft_pids:
        raise ArtifactInputError(f"{ctx.name}: no pair of kind 'sft' among {pids}")
    res = {side: {"base": results_of(ctx, "base", b), "ft": results_of(ctx, "ft", f), "paired": paired_of(ctx, p)}
           for side, (b, f, p) in SIDES.items()}
    rows = []
    for p in sft_pids:
        i = pids.index(p)
        sft = ctx.pairs[p]["finetuned"]
        if sft not in rl_of:
            raise ArtifactInputError(f"{ctx.name}: no pair of kind 'rl' starts from SFT checkpoint {sft!r} (pair {p!r})")
        q = rl_of[sft]
        j = pids.index(q)
        m = ft_manifest(ctx, i)
        step = m.get("step")
        if step == "final":
            run = getattr(ctx, "runs", {}).get(m.get("run"), {})
            step = run.get("spec", {}).get("steps")
        if not isinstance(step, int):
            raise ArtifactInputError(f"{ctx.name}: the SFT length of checkpoint {sft!r} is unknown (manifest step "
                                     f"{m.get('step')!r}, and its run's spec gives no steps)")
        row = {"sft_pair": p, "rl_pair": q, "sft_steps": step, "base": ctx.pairs[p]["base"], "sft": sft,
               "rl": ctx.pairs[q]["finetuned"]}
        for side, r in res.items():
            b, s, x = acc.accuracy(r["base"][i]), acc.accuracy(r["ft"][i]), acc.accuracy(r["ft"][j])
            d = acc.difference(ctx, r["paired"], row["rl"], sft)
            row.update({f"{side}_base": b.value, f"{side}_sft": s.value, f"{side}_sft_lo": s.lo, f"{side}_sft_hi": s.hi,
                        f"{side}_rl": x.value, f"{side}_rl_lo": x.lo, f"{side}_rl_hi": x.hi,
                        f"{side}_rl_gain": d.diff, f"{side}_rl_gain_lo": d.lo, f"{side}_rl_gain_hi": d.hi,
                        f"{side}_recovered": recovered(x.value, s.value, b.value)})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("sft_steps", kind="stable").reset_index(drop=True)


def rotation_summary(ctx: Context) -> pd.DataFrame:
    """The numbers of ``rotation_table`` (c): per pair, the mean over matrices and indices of the per-index and window angles and
    of |Δσ/σ|, over all cached indices and over the top quarter, beside ID / OOD pass@1 of the
    pair's fine-tuned checkpoint."""
    curves = rotation_curves(ctx)
    accs = rotation_accuracy_rows(ctx).set_index("checkpoint")
    rows = []
    for pid in ctx.pair_ids:
        cur = curves[curves.pair == pid]
        top = cur[cur["index"] < max(1, len(cur) // 4)]
        ft = ctx.pairs[pid]["finetuned"]
        row = {"pair": pid, "base": ctx.pairs[pid]["base"], "finetuned": ft, "indices": len(cur)}
        for part, df in (("all", cur), ("top_quarter", top)):
            for col in ("left_deg", "right_deg", "left_window_deg", "right_window_deg", "abs_rel_sv_change"):
                row[f"{col}_{part}"] = float(df[col].mean())
        for side in ("id", "ood"):
            row.update({f"{side}": accs.loc[ft, side], f"{side}_lo": accs.loc[ft, f"{side}_lo"],
                        f"{side}_hi": accs.loc[ft, f"{side}_hi"]})
        rows.append(row)
    return pd.DataFrame(rows)
