"""The paper's quantitative claims, each measured from the files behind its artifact, with a
verdict decided by a stated rule (the claims table, ``tables/claims.{csv,md}``).

Each :class:`Claim` names the paper's statement, the artifact(s) that show it, its rule in
words and two functions: ``measure`` reads the artifact's inputs (the same files its renderer
reads, through the same readers) into plain numbers, and ``decide`` turns those numbers into a
:class:`Finding` -- the measured value, its interval where one exists, and a verdict:

* ``holds``             -- the rule's condition is met beyond its stated margin;
* ``does not hold``     -- the measurement contradicts the claim;
* ``inside the noise``  -- the evidence cannot tell (an interval spans the decision point);
* ``not measured here`` -- this config does not render the artifact, or its pairs lack what
  the claim compares (e.g. no SFT pair), which the finding says.

The decision functions take numbers, not files, so each verdict is tested on constructed
inputs (``tests/test_claims.py``). A missing or malformed input file is an error, never a
verdict: the claims table is rendered only from complete inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from offprincipal.artifacts.catalogue import CLAIMED
from offprincipal.artifacts.data import accuracy as acc
from offprincipal.artifacts.data.context import ArtifactInputError, TrainingContext, read_csv
from offprincipal.artifacts.data.crossrun import MEAN_ROW, jaccard_rows
from offprincipal.artifacts.data.intervention import intervened_overlap, intervention_record
from offprincipal.artifacts.data.overlap import pooled_overlap, updated_counts
from offprincipal.artifacts.data.restoration import restoration_rows, rotation_summary, sft_then_rl_rows
from offprincipal.artifacts.data.runs import KL_COLUMNS, read_runs, read_updates, sparsity
from offprincipal.metrics.masks import MaskFile

HOLDS = "holds"
FAILS = "does not hold"
NOISE = "inside the noise"
NOT_MEASURED = "not measured here"
VERDICTS = (HOLDS, FAILS, NOISE, NOT_MEASURED)

#: Table 1: RL sparsity "far above" SFT's: medians this many points apart, every RL pair above every SFT pair
SPARSITY_GAP_PP = 20.0
#: Table 2: a run pair's pooled Jaccard at least this multiple of its independent-Bernoulli baseline
JACCARD_RATIO = 1.05
#: Figs. 4/16/17: RL "far below" SFT: the largest RL median at most this fraction of the smallest SFT median
FAR_BELOW = 0.5
#: Figs. 5/7: an overlap differs from random when it is this many binomial standard errors away
Z_SIGNIFICANT = 3.0
#: Fig. 6: "at the random level" = Jaccard / baseline at most this; a consistent layer is above RANDOM_LEVEL + margin
RANDOM_LEVEL = 1.05
CONSISTENT_LEVEL = 1.10
#: Tables 4/5: the safe mask "matches" dense when the paired 95% interval lies within ± this (accuracy, 0-1)
EQUIVALENCE_MARGIN = 0.02
#: Sec. 2.3: sparsity must fall by at least this many points from the lowest to the highest learning rate
LR_DROP_PP = 5.0


@dataclass(frozen=True)
class Finding:
    verdict: str
    measured: str
    interval: str = ""
    note: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r} (one of {VERDICTS})")


def not_measured(why: str) -> Finding:
    return Finding(NOT_MEASURED, "", note=why)


@dataclass(frozen=True)
class Claim:
    claim_id: str
    artifacts: tuple[str, ...]  # the first configured one is measured (and named as the evidence)
    statement: str
    rule: str
    measure: Callable[[TrainingContext], object]
    decide: Callable[..., Finding]


def _pct(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}%"


def _pp(d: acc.Difference) -> str:
    return f"{100 * d.diff:+.1f} pp"


def _ci_pp(d: acc.Difference) -> str:
    return f"[{100 * d.lo:+.1f}, {100 * d.hi:+.1f}] pp (95%, paired bootstrap over problems)"


def _kinds(ctx: TrainingContext) -> dict[str, str]:
    return {pid: str(ctx.pairs[pid].get("kind", "")).lower() for pid in ctx.pair_ids}


# ------------------------------------------------------------------ Table 1: RL sparser than SFT


def measure_sparsity(ctx: TrainingContext) -> dict[str, list[float]]:
    kinds = _kinds(ctx)
    out: dict[str, list[float]] = {"rl": [], "sft": []}
    for pid, path in zip(ctx.pair_ids, ctx.files("updates")):
        if kinds[pid] in out:
            out[kinds[pid]].append(100.0 * sparsity(read_updates(ctx, path)))
    return out


def decide_sparsity(values: Mapping[str, Sequence[float]]) -> Finding:
    rl, sft = list(values.get("rl", [])), list(values.get("sft", []))
    if not rl or not sft:
        return not_measured(f"needs RL and SFT pairs (has {len(rl)} RL, {len(sft)} SFT)")
    gap = float(np.median(rl) - np.median(sft))
    measured = (f"median sparsity RL {_pct(np.median(rl))} ({len(rl)} pairs, {_pct(min(rl))}-{_pct(max(rl))}) "
                f"vs SFT {_pct(np.median(sft))} ({len(sft)}); gap {gap:+.1f} pp")
    ok = gap >= SPARSITY_GAP_PP and min(rl) > max(sft)
    note = "" if ok else (f"the medians are {gap:.1f} pp apart" if gap < SPARSITY_GAP_PP
                          else f"an RL pair ({_pct(min(rl))}) is not above every SFT pair ({_pct(max(sft))})")
    return Finding(HOLDS if ok else FAILS, measured, note="exact counts, no sampling noise" + (f"; {note}" if note else ""))


# ------------------------------------------------------------------ Table 2: cross-run Jaccard


def measure_jaccard(ctx: TrainingContext) -> list[tuple[str, float, float]]:
    table = jaccard_rows(ctx)
    rows = table[table["run_a"] != MEAN_ROW]
    return [(f"{a}/{b}", float(j), float(base)) for a, b, j, base in
            zip(rows["run_a"], rows["run_b"], rows["jaccard_pooled"], rows["baseline_pooled"])]


def decide_jaccard(rows: Sequence[tuple[str, float, float]]) -> Finding:
    if not rows:
        return not_measured("no run pairs")
    ratios = [j / b if b > 0 else math.inf for _, j, b in rows]
    below = [name for (name, _, _), r in zip(rows, ratios) if r < JACCARD_RATIO]
    measured = (f"pooled Jaccard {np.mean([j for _, j, _ in rows]):.3f} vs baseline {np.mean([b for _, _, b in rows]):.3f} "
                f"(mean of {len(rows)} run pairs); Jaccard/baseline {min(ratios):.2f}-{max(ratios):.2f}")
    if not below:
        return Finding(HOLDS, measured)
    return Finding(FAILS, measured, note=f"{len(below)} of {len(rows)} run pairs below {JACCARD_RATIO:g}x: {', '.join(below[:4])}")


# ------------------------------------------------------------------ Figs. 4/16/17: drift and rotation


GEOMETRY = {"nss": ("nss",), "angle": ("max_angle_U_deg", "max_angle_V_deg")}


def _measure_geometry(ctx: TrainingContext, what: str) -> dict[str, list[float]]:
    """Per RL / SFT pair, the median over matrices of NSS or of the larger of the U and V angles."""
    cols = GEOMETRY[what]
    kinds = _kinds(ctx)
    out: dict[str, list[float]] = {"rl": [], "sft": []}
    for pid, path in zip(ctx.pair_ids, ctx.files("geometry")):
        if kinds[pid] not in out:
            continue
        df = read_csv(ctx.name, path, ("name", *cols), "geometry")
        v = df[list(cols)].max(axis=1).to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ArtifactInputError(f"{ctx.name}: input file {path} (geometry) has no finite {' / '.join(cols)}")
        out[kinds[pid]].append(float(np.median(v)))
    return out


def measure_drift(ctx: TrainingContext) -> dict[str, list[float]]:
    return _measure_geometry(ctx, "nss")


def measure_rotation(ctx: TrainingContext) -> dict[str, list[float]]:
    return _measure_geometry(ctx, "angle")


def _decide_far_below(values: Mapping[str, Sequence[float]], quantity: str, unit: str) -> Finding:
    rl, sft = list(values.get("rl", [])), list(values.get("sft", []))
    if not rl or not sft:
        return not_measured(f"needs RL and SFT pairs (has {len(rl)} RL, {len(sft)} SFT)")
    worst_rl, best_sft = max(rl), min(sft)
    ratio = worst_rl / best_sft if best_sft > 0 else math.inf
    measured = f"median {quantity}: RL {worst_rl:.4g}{unit} (largest of {len(rl)}) vs SFT {best_sft:.4g}{unit} (smallest of {len(sft)}); ratio {ratio:.3g}"
    return Finding(HOLDS if ratio <= FAR_BELOW else FAILS, measured, note="one value per checkpoint pair, no interval")


def decide_drift(values) -> Finding:
    return _decide_far_below(values, "NSS over matrices", "")


def decide_rotation(values) -> Finding:
    return _decide_far_below(values, "largest principal angle (max of U, V) over matrices", "°")


# ------------------------------------------------------------------ Figs. 5 and 7: overlaps


@dataclass(frozen=True)
class Overlap:
    pair: str
    observed: float
    baseline: float
    n_updated: int

    @property
    def z(self) -> float:
        """(observed - baseline) in binomial standard errors of ``n_updated`` entries placed at random."""
        se = math.sqrt(self.baseline * (1 - self.baseline) / self.n_updated) if self.n_updated else math.nan
        return (self.observed - self.baseline) / se if se > 0 else math.nan


def _overlaps(ctx: TrainingContext, mask: str) -> list[Overlap]:
    kinds = _kinds(ctx)
    out = []
    for pid, path in zip(ctx.pair_ids, ctx.files("geometry")):
        if kinds[pid] != "rl":
            continue
        df = read_csv(ctx.name, path, ("update_density", "numel", f"overlap_{mask}", f"density_{mask}"), "geometry")
        observed, baseline = pooled_overlap(df, mask)
        n = int(updated_counts(df).clip(lower=0).sum())
        if n == 0:
            raise ArtifactInputError(f"{ctx.name}: input file {path} (geometry) has no updated entries")
        out.append(Overlap(pid, observed, baseline, n))
    return out


def measure_principal_overlap(ctx):
    return _overlaps(ctx, "princ")


def measure_low_overlap(ctx):
    return _overlaps(ctx, "low")


def _decide_side(rows: Sequence[Overlap], below: bool, mask: str) -> Finding:
    if not rows:
        return not_measured("no RL pair")
    zs = [r.z for r in rows]
    measured = "; ".join(f"{r.pair}: {r.observed:.3f} vs random {r.baseline:.3f} (z {r.z:+.1f})" for r in rows)
    expected = -1 if below else 1  # the sign of z the claim predicts
    wrong = [r.pair for r, z in zip(rows, zs) if -expected * z >= Z_SIGNIFICANT]
    weak = [r.pair for r, z in zip(rows, zs) if abs(z) < Z_SIGNIFICANT]
    side = "below" if below else "above"
    if wrong:
        return Finding(FAILS, measured, note=f"{mask} overlap significantly on the wrong side in {', '.join(wrong)}")
    if weak:
        return Finding(NOISE, measured, note=f"within {Z_SIGNIFICANT:g} standard errors of random in {', '.join(weak)}")
    return Finding(HOLDS, measured, note=f"every RL pair {side} random by ≥ {Z_SIGNIFICANT:g} standard errors")


def decide_principal_overlap(rows) -> Finding:
    return _decide_side(rows, below=True, mask="principal")


def decide_low_overlap(rows) -> Finding:
    return _decide_side(rows, below=False, mask="low-magnitude")


def measure_princ_not_low(ctx) -> list[tuple[Overlap, Overlap]]:
    return list(zip(_overlaps(ctx, "princ"), _overlaps(ctx, "princ_not_low")))


def decide_princ_not_low(rows: Sequence[tuple[Overlap, Overlap]]) -> Finding:
    if not rows:
        return not_measured("no RL pair")
    parts, rose, weak = [], [], []
    for princ, pnl in rows:
        r_p, r_n = princ.observed / princ.baseline, pnl.observed / pnl.baseline
        parts.append(f"{princ.pair}: {r_p:.2f}x -> {r_n:.2f}x random (z {pnl.z:+.1f})")
        if r_n >= r_p:
            rose.append(princ.pair)
        elif pnl.z > -Z_SIGNIFICANT:
            weak.append(princ.pair)
    measured = "overlap / random, principal -> principal∖low: " + "; ".join(parts)
    if rose:
        return Finding(FAILS, measured, note=f"no drop in {', '.join(rose)}")
    if weak:
        return Finding(NOISE, measured, note=f"principal∖low within {Z_SIGNIFICANT:g} standard errors of random in {', '.join(weak)}")
    return Finding(HOLDS, measured)


# ------------------------------------------------------------------ Fig. 6: intervened layers


def measure_intervention(ctx: TrainingContext) -> pd.DataFrame:
    record, _ = intervention_record(ctx)
    paths = ctx.files("masks")
    with ExitStack() as stack:
        files = [stack.enter_context(MaskFile(p)) for p in paths]
        try:
            return intervened_overlap(*files, record)
        except ValueError as err:
            raise ArtifactInputError(f"{ctx.name}: mask files {paths}: {err}") from None


def decide_intervention(table: pd.DataFrame) -> Finding:
    """Rows touched by the intervention (a rotated or permuted matrix) against rows of layers it left alone."""
    touched = (table["n_rotated"] + table["n_mapped_back"]) > 0
    untouched = ~table["intervened"].astype(bool)
    if not touched.any() or not untouched.any():
        return not_measured("needs intervened and untouched layers")
    ratio = table["jaccard_ac"] / table["baseline_ac"]
    r_in, r_out = float(ratio[touched].mean()), float(ratio[untouched].mean())
    measured = (f"Jaccard(A, C) / baseline: {r_in:.2f} in {int(touched.sum())} intervened layer-groups, "
                f"{r_out:.2f} in {int(untouched.sum())} untouched ones")
    if r_in <= RANDOM_LEVEL and r_out >= CONSISTENT_LEVEL:
        return Finding(HOLDS, measured)
    note = (f"intervened layers stay above the random level ({r_in:.2f} > {RANDOM_LEVEL:g})" if r_in > RANDOM_LEVEL
            else f"untouched layers are not consistent either ({r_out:.2f} < {CONSISTENT_LEVEL:g})")
    return Finding(FAILS, measured, note=note)


# ------------------------------------------------------------------ Fig. 9: KL of masked runs


def measure_mask_kl(ctx: TrainingContext) -> dict[str, float]:
    """Mean logged KL to the base over training steps, per mask (a curve's height: a slower curve is lower)."""
    out = {}
    for r in read_runs(ctx):
        col, rows = r.column(ctx.name, *KL_COLUMNS)
        out[r.mask] = float(rows[col].mean())
    return out


def decide_mask_kl(kl: Mapping[str, float]) -> Finding:
    need = {"none", "principal", "safe"}
    if not need <= set(kl):
        return not_measured(f"needs dense, principal and safe runs (has {sorted(kl)})")
    masked = {m: v for m, v in kl.items() if m != "none"}
    slowest = min(masked, key=masked.get)
    closest = min(masked, key=lambda m: abs(masked[m] - kl["none"]))
    measured = "mean KL over steps: " + ", ".join(f"{m} {v:.3g}" for m, v in sorted(kl.items(), key=lambda kv: kv[1]))
    ok = slowest == "principal" and closest == "safe"
    note = "one run per mask, no interval"
    if not ok:
        note += f"; slowest: {slowest}, closest to dense: {closest}"
    return Finding(HOLDS if ok else FAILS, measured, note=note)


# ------------------------------------------------------------------ Tables 4/5: masked accuracy


def measure_mask_accuracy(ctx: TrainingContext) -> dict[str, acc.Difference]:
    """Paired accuracy difference, each masked run minus the dense reference."""
    ref_pid = ctx.spec.get("reference")
    if not ref_pid:
        raise ArtifactInputError(f"{ctx.name}: the artifact's spec names no reference (dense) pair")
    ref = ctx.pairs[ref_pid]["finetuned"]
    paired = acc.read_paired(ctx)
    out = {}
    for pid, r in zip(ctx.pair_ids, read_runs(ctx)):
        ckpt = ctx.pairs[pid]["finetuned"]
        if ckpt != ref and r.mask != "none":
            out[r.mask] = acc.difference(ctx, paired, ckpt, ref)
    return out


def decide_principal_costs(diffs: Mapping[str, acc.Difference]) -> Finding:
    d = diffs.get("principal")
    if d is None:
        return not_measured(f"no principal-mask run (has {sorted(diffs)})")
    measured, interval = f"principal − dense {_pp(d)}", _ci_pp(d)
    if d.hi < 0:
        return Finding(HOLDS, measured, interval)
    if d.lo > 0:
        return Finding(FAILS, measured, interval, note="the principal mask is more accurate than dense")
    return Finding(NOISE, measured, interval, note="the interval includes 0")


def decide_safe_matches(diffs: Mapping[str, acc.Difference]) -> Finding:
    d = diffs.get("safe")
    if d is None:
        return not_measured(f"no safe-mask run (has {sorted(diffs)})")
    m = EQUIVALENCE_MARGIN
    measured, interval = f"safe − dense {_pp(d)}", _ci_pp(d)
    if -m <= d.lo and d.hi <= m:
        return Finding(HOLDS, measured, interval, note=f"interval within ±{100 * m:g} pp")
    if d.hi < -m or d.lo > m:
        return Finding(FAILS, measured, interval, note=f"interval outside ±{100 * m:g} pp")
    return Finding(NOISE, measured, interval, note=f"interval wider than ±{100 * m:g} pp")


# ------------------------------------------------------------------ Figs. 10/11: PiSSA vs LoRA


def measure_pissa_lora(ctx: TrainingContext) -> list[tuple[float, acc.Difference]]:
    """(learning rate, PiSSA − LoRA) for each of the spec's contrasts of a PiSSA and a LoRA run."""
    runs = {ctx.pairs[pid]["finetuned"]: r for pid, r in zip(ctx.pair_ids, read_runs(ctx))}
    paired = acc.read_paired(ctx)
    out = []
    for a, b in ctx.spec.get("contrasts") or []:
        ra, rb = runs.get(a), runs.get(b)
        if ra and rb and ra.adapter == "pissa" and rb.adapter == "lora":
            if ra.lr != rb.lr:
                raise ArtifactInputError(f"{ctx.name}: contrast {a} − {b} compares learning rates {ra.lr:g} and {rb.lr:g}")
            out.append((ra.lr, acc.difference(ctx, paired, a, b)))
    return sorted(out, key=lambda t: t[0])


def _lr_list(rows) -> str:
    return "; ".join(f"lr {lr:g}: {_pp(d)} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]" for lr, d in rows)


def decide_pissa_no_better(rows: Sequence[tuple[float, acc.Difference]]) -> Finding:
    if not rows:
        return not_measured("no PiSSA − LoRA contrast at one learning rate in the spec")
    better = [lr for lr, d in rows if d.lo > 0]
    measured = "PiSSA − LoRA " + _lr_list(rows)
    if better:
        return Finding(FAILS, measured, "95% paired intervals", note=f"PiSSA better at lr {', '.join(f'{x:g}' for x in better)}")
    return Finding(HOLDS, measured, "95% paired intervals", note="PiSSA's interval excludes a gain at every learning rate")


def decide_pissa_collapses(rows: Sequence[tuple[float, acc.Difference]]) -> Finding:
    if len(rows) < 2:
        return not_measured("needs PiSSA − LoRA contrasts at two or more learning rates")
    lr, d = rows[-1]
    measured, interval = f"PiSSA − LoRA at the highest lr {lr:g}: {_pp(d)}", _ci_pp(d)
    if d.hi < 0:
        return Finding(HOLDS, measured, interval)
    if d.lo > 0:
        return Finding(FAILS, measured, interval, note="PiSSA is better at the highest learning rate")
    return Finding(NOISE, measured, interval, note="the interval includes 0")


# ------------------------------------------------------------------ Sec. 2.3: sparsity vs lr


def measure_lr_sparsity(ctx: TrainingContext) -> dict[float, float]:
    by_lr: dict[float, list[float]] = {}
    for path, r in zip(ctx.files("updates"), read_runs(ctx)):
        by_lr.setdefault(r.lr, []).append(100.0 * sparsity(read_updates(ctx, path)))
    return {lr: float(np.mean(v)) for lr, v in sorted(by_lr.items())}


def decide_lr_sparsity(by_lr: Mapping[float, float]) -> Finding:
    if len(by_lr) < 2:
        return not_measured("needs runs at two or more learning rates")
    lrs = sorted(by_lr)
    s = [by_lr[lr] for lr in lrs]
    measured = "sparsity by lr: " + ", ".join(f"{lr:g}: {_pct(v)}" for lr, v in zip(lrs, s))
    monotone = all(b <= a for a, b in zip(s, s[1:]))
    drop = s[0] - s[-1]
    if monotone and drop >= LR_DROP_PP:
        return Finding(HOLDS, measured, note=f"falls {drop:.1f} pp, at every step")
    why = f"falls only {drop:.1f} pp" if monotone else "not monotone in the learning rate"
    return Finding(FAILS, measured, note=why)


# ------------------------------------------------------------------ Jin et al. (arXiv 2508.16546)

#: UV restoration "recovers 70-80% of the OOD loss": at least this share of the SFT-to-base OOD gap
RESTORE_SHARE = 0.7
#: RL after SFT "mostly restores" OOD: at least this median share of the SFT-to-base OOD gap
RL_RESTORE_SHARE = 0.5
#: SFT "rotates singular vectors while singular values barely move": sin(angle) at least this multiple of |Δσ/σ|
ROTATION_OVER_SCALE = 10.0


@dataclass(frozen=True)
class Recovery:
    what: str
    share: float  # (x - SFT) / (base - SFT) on the OOD suite
    gain: acc.Difference  # x - SFT on the OOD suite, paired


def _restored(ctx: TrainingContext, pick) -> Recovery | None:
    rows = restoration_rows(ctx)
    rows = rows[[r.role not in ("base", "sft") and pick(r) for r in rows.itertuples()]]
    if rows.empty:
        return None
    r = rows.iloc[0]
    gain = acc.Difference(str(r["checkpoint"]), "sft", float(r["ood_vs_sft"]), float(r["ood_vs_sft_lo"]),
                          float(r["ood_vs_sft_hi"]), 0)
    return Recovery(str(r["checkpoint"]), float(r["ood_recovered"]), gain)


def measure_restore_top20(ctx):
    return _restored(ctx, lambda r: r.mode == "top_p" and math.isclose(float(r.top_p), 0.2))


def measure_restore_first_quarter(ctx):
    return _restored(ctx, lambda r: r.mode == "layers" and r.layers == "first")


def decide_recovery(rec: Recovery | None) -> Finding:
    if rec is None:
        return not_measured("no restored checkpoint with this recipe among the artifact's pairs")
    d = rec.gain
    measured = f"{rec.what}: OOD {_pp(d)} over SFT, {100 * rec.share:.0f}% of the SFT-to-base gap recovered"
    if d.lo <= 0 <= d.hi:
        return Finding(NOISE, measured, _ci_pp(d), note="the OOD gain's interval includes 0")
    if d.hi < 0:
        return Finding(FAILS, measured, _ci_pp(d), note="restoration lowers OOD accuracy")
    if rec.share >= RESTORE_SHARE:
        return Finding(HOLDS, measured, _ci_pp(d))
    return Finding(FAILS, measured, _ci_pp(d), note=f"recovers under {100 * RESTORE_SHARE:.0f}% of the gap")


def measure_rl_after_sft(ctx) -> list[Recovery]:
    rows = sft_then_rl_rows(ctx)
    return [Recovery(f"RL after {int(r.sft_steps)} SFT steps", float(r.ood_recovered),
                     acc.Difference(str(r.rl), str(r.sft), float(r.ood_rl_gain), float(r.ood_rl_gain_lo),
                                    float(r.ood_rl_gain_hi), 0))
            for r in rows.itertuples()]


def decide_rl_after_sft(recs: Sequence[Recovery]) -> Finding:
    if not recs:
        return not_measured("no SFT checkpoint with an RL run from it")
    share = float(np.median([r.share for r in recs]))
    measured = "OOD gain of RL over its SFT start: " + "; ".join(
        f"{r.what}: {_pp(r.gain)} [{100 * r.gain.lo:+.1f}, {100 * r.gain.hi:+.1f}], {100 * r.share:.0f}% recovered"
        for r in recs)
    below = [r.what for r in recs if r.gain.hi < 0]
    unclear = [r.what for r in recs if r.gain.lo <= 0 <= r.gain.hi]
    if below:
        return Finding(FAILS, measured, "95% paired intervals", note=f"RL lowers OOD accuracy: {', '.join(below)}")
    if unclear:
        return Finding(NOISE, measured, "95% paired intervals", note=f"interval includes 0: {', '.join(unclear)}")
    if share >= RL_RESTORE_SHARE:
        return Finding(HOLDS, measured, "95% paired intervals", note=f"median share recovered {100 * share:.0f}%")
    return Finding(FAILS, measured, "95% paired intervals",
                   note=f"median share recovered {100 * share:.0f}% < {100 * RL_RESTORE_SHARE:.0f}%")


def measure_sft_rotation(ctx) -> list[tuple[str, float, float]]:
    """(pair, mean top-quarter angle of U and V in degrees, mean top-quarter |Δσ/σ|) of each SFT pair."""
    table = rotation_summary(ctx)
    kinds = _kinds(ctx)
    return [(r.pair, (r.left_deg_top_quarter + r.right_deg_top_quarter) / 2, r.abs_rel_sv_change_top_quarter)
            for r in table.itertuples() if kinds[r.pair] == "sft"]


def decide_sft_rotation(rows: Sequence[tuple[str, float, float]]) -> Finding:
    if not rows:
        return not_measured("no SFT pair")
    ratios = [math.sin(math.radians(a)) / s if s > 0 else math.inf for _, a, s in rows]
    measured = "; ".join(f"{p}: top-quarter singular vectors turn {a:.2f}°, singular values move {100 * s:.3f}% "
                         f"(sin(angle) / |Δσ/σ| = {r:.1f})" for (p, a, s), r in zip(rows, ratios))
    ok = min(ratios) >= ROTATION_OVER_SCALE
    return Finding(HOLDS if ok else FAILS, measured, note="means over matrices and the top quarter of indices")


# ------------------------------------------------------------------ the catalogue of claims


CLAIMS: tuple[Claim, ...] = (
    Claim("rl_sparser_than_sft", ("table1",),
          "RL updates are far sparser than SFT's: 36-92% of bf16 parameters unchanged after RL vs 0.6-18.8% after SFT.",
          f"holds if the RL median exceeds the SFT median by ≥ {SPARSITY_GAP_PP:g} pp and every RL pair is above "
          "every SFT pair (η rule)", measure_sparsity, decide_sparsity),
    Claim("crossrun_jaccard_above_baseline", ("table2",),
          "Independent RL runs update overlapping entries: cross-run Jaccard well above the independent-Bernoulli baseline.",
          f"holds if every run pair's pooled Jaccard is ≥ {JACCARD_RATIO:g}x its baseline", measure_jaccard, decide_jaccard),
    Claim("rl_spectrum_drift_below_sft", ("fig4", "fig16", "fig17"),
          "RL barely moves the spectrum (NSS) while SFT shifts it.",
          f"holds if the largest RL pair's median NSS is ≤ {FAR_BELOW:g}x the smallest SFT pair's",
          measure_drift, decide_drift),
    Claim("rl_rotation_below_sft", ("fig4", "fig16", "fig17", "fig1c"),
          "RL barely rotates the top singular subspaces while SFT rotates them.",
          f"holds if the largest RL pair's median top-k principal angle is ≤ {FAR_BELOW:g}x the smallest SFT pair's",
          measure_rotation, decide_rotation),
    Claim("rl_avoids_principal_weights", ("fig5",),
          "RL updates overlap the principal mask less than random.",
          f"holds if every RL pair's pooled overlap is ≥ {Z_SIGNIFICANT:g} binomial standard errors below the mask density; "
          "inside the noise if any is within that",
          measure_principal_overlap, decide_principal_overlap),
    Claim("rl_prefers_low_magnitude", ("fig5",),
          "RL updates overlap the low-magnitude mask more than random.",
          f"holds if every RL pair's pooled overlap is ≥ {Z_SIGNIFICANT:g} binomial standard errors above the mask density",
          measure_low_overlap, decide_low_overlap),
    Claim("principal_not_low_drop", ("fig7",),
          "Removing M_princ ∩ M_low, RL's overlap with the remaining principal weights drops further below random.",
          "holds if for every RL pair overlap/random falls from the principal to the principal∖low mask and the latter "
          f"is ≥ {Z_SIGNIFICANT:g} standard errors below random", measure_princ_not_low, decide_princ_not_low),
    Claim("intervention_removes_consistency", ("fig6",),
          "Rotating/permuting the base's layers removes the cross-run update overlap only in the intervened layers.",
          f"holds if Jaccard(A, C)/baseline is ≤ {RANDOM_LEVEL:g} in intervened layer-groups and ≥ {CONSISTENT_LEVEL:g} "
          "in untouched layers", measure_intervention, decide_intervention),
    Claim("principal_mask_kl_slowest", ("fig9",),
          "Training only principal weights gives the slowest-rising KL; the safe mask's KL is closest to dense.",
          "holds if the principal mask has the lowest mean KL over steps of the masked runs and the safe mask the one "
          "nearest dense", measure_mask_kl, decide_mask_kl),
    Claim("principal_mask_costs_accuracy", ("table4",),
          "The principal-only mask loses accuracy against dense RL (final checkpoint).",
          "holds if the paired 95% interval of principal − dense lies below 0; inside the noise if it includes 0",
          measure_mask_accuracy, decide_principal_costs),
    Claim("safe_mask_matches_dense", ("table4",),
          "The safe mask (low-magnitude ∪ non-principal) matches dense RL's accuracy (final checkpoint).",
          f"holds if the paired 95% interval of safe − dense lies within ±{100 * EQUIVALENCE_MARGIN:g} pp; does not "
          "hold if it lies outside; inside the noise otherwise", measure_mask_accuracy, decide_safe_matches),
    Claim("principal_mask_costs_accuracy_early", ("table5",),
          "The principal-only mask lags dense RL at an intermediate checkpoint.",
          "as for the final checkpoint", measure_mask_accuracy, decide_principal_costs),
    Claim("safe_mask_matches_dense_early", ("table5",),
          "The safe mask matches dense RL at an intermediate checkpoint.",
          "as for the final checkpoint", measure_mask_accuracy, decide_safe_matches),
    Claim("pissa_no_better_than_lora", ("fig10", "fig11"),
          "PiSSA (principal-targeted adapters) is no better than LoRA for RL.",
          "holds if no learning rate's paired 95% interval of PiSSA − LoRA lies above 0",
          measure_pissa_lora, decide_pissa_no_better),
    Claim("pissa_collapses_at_high_lr", ("fig10", "fig11"),
          "At high learning rates PiSSA collapses earlier than LoRA.",
          "holds if at the highest learning rate the paired 95% interval of PiSSA − LoRA lies below 0; inside the "
          "noise if it includes 0", measure_pissa_lora, decide_pissa_collapses),
    Claim("sparsity_shrinks_with_lr", ("sec2_3",),
          "Apparent update sparsity shrinks as the learning rate grows (bf16 absorbs small updates).",
          f"holds if mean sparsity never rises with the learning rate and falls ≥ {LR_DROP_PP:g} pp over the range",
          measure_lr_sparsity, decide_lr_sparsity),
    # the companion study, arXiv 2508.16546 (config/restore.yaml)
    Claim("sft_rotates_singular_vectors", ("rotation_table",),
          "[2508.16546] SFT rotates singular vectors while the singular values barely change.",
          f"holds if for every SFT pair sin(mean top-quarter angle) ≥ {ROTATION_OVER_SCALE:g}x the mean top-quarter |Δσ/σ|",
          measure_sft_rotation, decide_sft_rotation),
    Claim("restore_top20_recovers_ood", ("restore_table",),
          "[2508.16546] Restoring the base's singular directions for the top 20% of singular values recovers "
          "70-80% of SFT's OOD loss.",
          f"holds if the paired OOD gain over SFT lies above 0 and recovers ≥ {100 * RESTORE_SHARE:.0f}% of the "
          "SFT-to-base gap; inside the noise if its interval includes 0", measure_restore_top20, decide_recovery),
    Claim("restore_first_quarter_recovers_ood", ("restore_table",),
          "[2508.16546] Restoring the first 25% of layers recovers 70-80% of SFT's OOD loss.",
          "as for the top-20% restoration", measure_restore_first_quarter, decide_recovery),
    Claim("rl_after_sft_restores_ood", ("sft_then_rl_table",),
          "[2508.16546] RL after SFT restores most of the OOD accuracy SFT lost.",
          "holds if at every SFT length RL's paired OOD gain over its SFT start lies above 0 and the median share of "
          f"the SFT-to-base gap recovered is ≥ {100 * RL_RESTORE_SHARE:.0f}%; inside the noise if an interval "
          "includes 0", measure_rl_after_sft, decide_rl_after_sft),
)

_unlisted = sorted({a for c in CLAIMS for a in c.artifacts} - set(CLAIMED))
if _unlisted:  # the workflow gives the claims job only CLAIMED artifacts' inputs
    raise ImportError(f"claims read artifacts missing from offprincipal.artifacts.CLAIMED: {_unlisted}")

COLUMNS = ("claim", "statement", "artifact", "measured", "interval", "verdict", "rule", "note")


def split_inputs(inputs: Mapping[str, Sequence[str]]) -> dict[str, dict[str, list[str]]]:
    """``{"fig5/geometry": [...]}`` -> ``{"fig5": {"geometry": [...]}}`` (the claims job's inputs
    are every claimed artifact's inputs under ``artifact/key``)."""
    out: dict[str, dict[str, list[str]]] = {}
    for key, files in inputs.items():
        if "/" in key:
            art, sub = key.split("/", 1)
            out.setdefault(art, {})[sub] = list(files)
    return out


def evaluate_claims(ctx: TrainingContext) -> pd.DataFrame:
    """One row per claim: what was measured, the verdict and the artifact that shows it.

    ``ctx.spec["artifacts"]`` holds the config entries of the claimed artifacts this config
    renders, and ``ctx.inputs`` their inputs as :func:`split_inputs` reads them."""
    specs = ctx.spec.get("artifacts") or {}
    per_artifact = split_inputs(ctx.inputs)
    measured: dict[tuple, object] = {}  # claims that share a measurement (e.g. Table 4's two) read it once
    rows = []
    for claim in CLAIMS:
        shown = next((a for a in claim.artifacts if a in specs), None)
        if shown is None:
            finding = not_measured(f"this config renders none of {', '.join(claim.artifacts)}")
        else:
            key = (claim.measure, shown)
            if key not in measured:
                sub = replace(ctx, name=shown, spec=dict(specs[shown]), inputs=per_artifact.get(shown, {}))
                measured[key] = claim.measure(sub)
            finding = claim.decide(measured[key])
        rows.append({"claim": claim.claim_id, "statement": claim.statement, "artifact": shown or "/".join(claim.artifacts),
                     "measured": finding.measured, "interval": finding.interval, "verdict": finding.verdict,
                     "rule": claim.rule, "note": finding.note})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def claims_table(ctx: TrainingContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table renderer's pair: the CSV frame and the Markdown one (verdict first for reading)."""
    table = evaluate_claims(ctx)
    md = table[["verdict", "statement", "measured", "interval", "artifact", "rule", "note"]].rename(columns=str.capitalize)
    return table, md
