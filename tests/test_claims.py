"""The claims table: every claim's verdict rule on constructed inputs, for each verdict it can give,
and the measurements read from constructed result files, checked against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from offprincipal.artifacts import claims as C
from offprincipal.artifacts.catalogue import ARTIFACTS, CLAIMED
from offprincipal.artifacts.data.accuracy import Difference
from offprincipal.artifacts.data.context import TrainingContext
from offprincipal.artifacts.inputs import claims_inputs, claims_spec


def diff(d: float, lo: float, hi: float) -> Difference:
    return Difference("a", "b", d, lo, hi, 500)


# ------------------------------------------------------------------ Table 1


def test_sparsity_verdicts():
    assert C.decide_sparsity({"rl": [60.0, 45.0], "sft": [3.0, 10.0]}).verdict == C.HOLDS
    # a gap of medians under 20 pp
    f = C.decide_sparsity({"rl": [25.0, 27.0], "sft": [10.0, 12.0]})
    assert f.verdict == C.FAILS and "15.0 pp apart" in f.note
    # medians far apart, but one RL pair below an SFT pair
    f = C.decide_sparsity({"rl": [80.0, 70.0, 5.0], "sft": [6.0, 8.0]})
    assert f.verdict == C.FAILS and "not above every SFT pair" in f.note
    assert C.decide_sparsity({"rl": [80.0], "sft": []}).verdict == C.NOT_MEASURED


def test_sparsity_is_measured_from_updates_per_kind(tmp_path):
    ctx = TrainingContext("table1", {}, {"pairs": ["s", "r"]}, {"s": {"kind": "sft"}, "r": {"kind": "rl"}}, False, "t")
    files = []
    for pid, changed in (("s", [90, 8]), ("r", [10, 2])):
        p = tmp_path / f"{pid}.csv"
        pd.DataFrame({"name": ["a", "b"], "kind": ["q", "o"], "numel": [100, 10], "changed_eta": changed}).to_csv(p, index=False)
        files.append(str(p))
    ctx.inputs["updates"] = files
    got = C.measure_sparsity(ctx)
    assert got == {"sft": [pytest.approx(100 * (1 - 98 / 110))], "rl": [pytest.approx(100 * (1 - 12 / 110))]}


# ------------------------------------------------------------------ Table 2


def test_jaccard_verdicts():
    assert C.decide_jaccard([("a/b", 0.6, 0.3), ("a/c", 0.5, 0.4)]).verdict == C.HOLDS
    f = C.decide_jaccard([("a/b", 0.6, 0.3), ("a/c", 0.41, 0.4)])  # 1.025x: not 5% above
    assert f.verdict == C.FAILS and "a/c" in f.note
    assert C.decide_jaccard([]).verdict == C.NOT_MEASURED


# ------------------------------------------------------------------ Figs. 4/16/17


def test_far_below_verdicts():
    assert C.decide_drift({"rl": [0.01, 0.04], "sft": [0.2, 0.1]}).verdict == C.HOLDS  # 0.04 / 0.1 = 0.4
    assert C.decide_drift({"rl": [0.01, 0.06], "sft": [0.2, 0.1]}).verdict == C.FAILS  # 0.6
    assert C.decide_rotation({"rl": [3.0], "sft": [40.0]}).verdict == C.HOLDS
    assert C.decide_rotation({"rl": [30.0], "sft": [40.0]}).verdict == C.FAILS
    assert C.decide_rotation({"rl": [], "sft": [40.0]}).verdict == C.NOT_MEASURED


def test_rotation_is_the_median_of_the_larger_of_u_and_v(tmp_path):
    p = tmp_path / "g.csv"
    u, v = np.array([1.0, 10.0, 3.0, np.nan]), np.array([2.0, 1.0, 5.0, 4.0])
    pd.DataFrame({"name": list("abcd"), "max_angle_U_deg": u, "max_angle_V_deg": v}).to_csv(p, index=False)
    ctx = TrainingContext("fig4", {"geometry": [str(p)]}, {"pairs": ["r"]}, {"r": {"kind": "rl"}}, False, "t")
    assert C.measure_rotation(ctx) == {"rl": [pytest.approx(np.median([2.0, 10.0, 5.0, 4.0]))], "sft": []}


# ------------------------------------------------------------------ Figs. 5 and 7


def test_overlap_z_is_the_binomial_standard_error():
    o = C.Overlap("p", 0.45, 0.5, 400)
    assert o.z == pytest.approx((0.45 - 0.5) / math.sqrt(0.25 / 400))  # = -2.0


def test_principal_overlap_verdicts():
    below = C.Overlap("a", 0.30, 0.5, 10_000)  # z = -40
    weak = C.Overlap("b", 0.49, 0.5, 400)  # z = -0.4
    above = C.Overlap("c", 0.60, 0.5, 10_000)  # z = +20
    assert C.decide_principal_overlap([below]).verdict == C.HOLDS
    assert C.decide_principal_overlap([below, weak]).verdict == C.NOISE
    f = C.decide_principal_overlap([below, above])
    assert f.verdict == C.FAILS and "c" in f.note
    assert C.decide_principal_overlap([]).verdict == C.NOT_MEASURED


def test_low_magnitude_overlap_verdicts_mirror_the_principal_ones():
    assert C.decide_low_overlap([C.Overlap("a", 0.7, 0.5, 10_000)]).verdict == C.HOLDS
    assert C.decide_low_overlap([C.Overlap("a", 0.51, 0.5, 400)]).verdict == C.NOISE
    assert C.decide_low_overlap([C.Overlap("a", 0.3, 0.5, 10_000)]).verdict == C.FAILS


def test_overlaps_are_pooled_by_updated_entries_over_rl_pairs_only(tmp_path):
    p = tmp_path / "g.csv"
    pd.DataFrame({"name": ["a", "b"], "layer": [0, 1], "numel": [100, 300], "update_density": [0.5, 0.1],
                  "overlap_princ": [0.2, 0.6], "density_princ": [0.5, 0.5]}).to_csv(p, index=False)
    ctx = TrainingContext("fig5", {"geometry": [str(p), str(p)]}, {"pairs": ["r", "s"]},
                          {"r": {"kind": "rl"}, "s": {"kind": "sft"}}, False, "t")
    (o,) = C.measure_principal_overlap(ctx)
    assert (o.pair, o.n_updated) == ("r", 80)  # 50 + 30 updated entries
    assert o.observed == pytest.approx((0.2 * 50 + 0.6 * 30) / 80) and o.baseline == pytest.approx(0.5)


def test_princ_not_low_verdicts():
    princ = C.Overlap("a", 0.40, 0.5, 10_000)  # 0.8x random
    assert C.decide_princ_not_low([(princ, C.Overlap("a", 0.2, 0.4, 10_000))]).verdict == C.HOLDS  # 0.5x, z -40
    assert C.decide_princ_not_low([(princ, C.Overlap("a", 0.30, 0.4, 100))]).verdict == C.NOISE  # 0.75x, z -2.0
    assert C.decide_princ_not_low([(princ, C.Overlap("a", 0.30, 0.4, 10_000))]).verdict == C.HOLDS  # 0.75x, z -20
    assert C.decide_princ_not_low([(princ, C.Overlap("a", 0.38, 0.4, 10_000))]).verdict == C.FAILS  # 0.95x > 0.8x
    assert C.decide_princ_not_low([]).verdict == C.NOT_MEASURED


# ------------------------------------------------------------------ Fig. 6


def _intervention_table(ratio_touched: float, ratio_untouched: float) -> pd.DataFrame:
    rows = [
        {"layer": 0, "group": "attention", "n_rotated": 2, "n_mapped_back": 0, "intervened": True,
         "jaccard_ac": 0.3 * ratio_touched, "baseline_ac": 0.3},
        # an intervened layer's untouched group is neither side of the comparison
        {"layer": 0, "group": "mlp", "n_rotated": 0, "n_mapped_back": 0, "intervened": True,
         "jaccard_ac": 0.9, "baseline_ac": 0.3},
        {"layer": 1, "group": "attention", "n_rotated": 0, "n_mapped_back": 0, "intervened": False,
         "jaccard_ac": 0.3 * ratio_untouched, "baseline_ac": 0.3},
    ]
    return pd.DataFrame(rows)


def test_intervention_verdicts():
    assert C.decide_intervention(_intervention_table(1.0, 1.6)).verdict == C.HOLDS
    f = C.decide_intervention(_intervention_table(1.4, 1.6))
    assert f.verdict == C.FAILS and "stay above the random level" in f.note
    f = C.decide_intervention(_intervention_table(1.0, 1.02))
    assert f.verdict == C.FAILS and "not consistent either" in f.note
    only_touched = _intervention_table(1.0, 1.6).iloc[:2]
    assert C.decide_intervention(only_touched).verdict == C.NOT_MEASURED


# ------------------------------------------------------------------ Fig. 9, Tables 4/5


def test_mask_kl_verdicts():
    assert C.decide_mask_kl({"none": 1.0, "principal": 0.2, "safe": 0.9, "low": 0.5}).verdict == C.HOLDS
    f = C.decide_mask_kl({"none": 1.0, "principal": 0.6, "safe": 0.9, "low": 0.5})
    assert f.verdict == C.FAILS and "slowest: low" in f.note
    f = C.decide_mask_kl({"none": 1.0, "principal": 0.2, "safe": 0.5, "low": 0.95})
    assert f.verdict == C.FAILS and "closest to dense: low" in f.note
    assert C.decide_mask_kl({"none": 1.0, "principal": 0.2}).verdict == C.NOT_MEASURED


def test_principal_mask_accuracy_verdicts():
    assert C.decide_principal_costs({"principal": diff(-0.03, -0.05, -0.01)}).verdict == C.HOLDS
    assert C.decide_principal_costs({"principal": diff(-0.01, -0.03, 0.01)}).verdict == C.NOISE
    assert C.decide_principal_costs({"principal": diff(0.03, 0.01, 0.05)}).verdict == C.FAILS
    assert C.decide_principal_costs({"safe": diff(0, -0.01, 0.01)}).verdict == C.NOT_MEASURED


def test_safe_mask_equivalence_verdicts():
    assert C.decide_safe_matches({"safe": diff(0.0, -0.015, 0.015)}).verdict == C.HOLDS
    assert C.decide_safe_matches({"safe": diff(-0.01, -0.03, 0.01)}).verdict == C.NOISE  # wider than ±2 pp
    assert C.decide_safe_matches({"safe": diff(-0.05, -0.07, -0.03)}).verdict == C.FAILS
    assert C.decide_safe_matches({"principal": diff(0, -0.01, 0.01)}).verdict == C.NOT_MEASURED


# ------------------------------------------------------------------ Figs. 10/11, Sec. 2.3


def test_pissa_verdicts():
    worse_high = [(1e-4, diff(0.0, -0.02, 0.02)), (1e-3, diff(-0.05, -0.08, -0.02))]
    assert C.decide_pissa_no_better(worse_high).verdict == C.HOLDS
    assert C.decide_pissa_collapses(worse_high).verdict == C.HOLDS
    better_low = [(1e-4, diff(0.03, 0.01, 0.05)), (1e-3, diff(-0.01, -0.04, 0.02))]
    assert C.decide_pissa_no_better(better_low).verdict == C.FAILS
    assert C.decide_pissa_collapses(better_low).verdict == C.NOISE
    assert C.decide_pissa_collapses([(1e-4, diff(0, -0.01, 0.01)), (1e-3, diff(0.04, 0.02, 0.06))]).verdict == C.FAILS
    assert C.decide_pissa_collapses(worse_high[:1]).verdict == C.NOT_MEASURED
    assert C.decide_pissa_no_better([]).verdict == C.NOT_MEASURED


def test_lr_sparsity_verdicts():
    assert C.decide_lr_sparsity({1e-5: 80.0, 1e-4: 60.0, 1e-3: 30.0}).verdict == C.HOLDS
    f = C.decide_lr_sparsity({1e-5: 80.0, 1e-4: 85.0, 1e-3: 30.0})
    assert f.verdict == C.FAILS and "not monotone" in f.note
    f = C.decide_lr_sparsity({1e-5: 80.0, 1e-3: 77.0})
    assert f.verdict == C.FAILS and "only 3.0 pp" in f.note
    assert C.decide_lr_sparsity({1e-5: 80.0}).verdict == C.NOT_MEASURED


# ------------------------------------------------------------------ the table


def test_every_claimed_artifact_is_catalogued_and_every_verdict_is_known():
    assert set(CLAIMED) <= set(ARTIFACTS)
    for claim in C.CLAIMS:
        assert claim.artifacts and set(claim.artifacts) <= set(CLAIMED)
    with pytest.raises(ValueError, match="unknown verdict"):
        C.Finding("probably", "x")


def test_claims_inputs_prefix_each_artifact_and_merge_manifests():
    pairs = {"a": {"base": "b0", "finetuned": "f1", "kind": "rl"}, "s": {"base": "b0", "finetuned": "f2", "kind": "sft"}}
    specs = {"table1": {"pairs": ["s", "a"]}, "fig5": {"pairs": ["a"]}, "fig2": {"pairs": ["a"]}}
    got = claims_inputs(CLAIMED, specs, pairs=pairs, checkpoints={}, results="r")
    assert got == {"table1/updates": ["r/pairs/s/updates.csv", "r/pairs/a/updates.csv"],
                   "table1/base_manifests": ["r/checkpoints/b0.json", "r/checkpoints/b0.json"],
                   "table1/ft_manifests": ["r/checkpoints/f2.json", "r/checkpoints/f1.json"],
                   "fig5/geometry": ["r/pairs/a/geometry.csv"], "fig5/angles": ["r/pairs/a/angles.csv"],
                   "fig5/base_manifests": ["r/checkpoints/b0.json"], "fig5/ft_manifests": ["r/checkpoints/f1.json"],
                   "base_manifests": ["r/checkpoints/b0.json"],
                   "ft_manifests": ["r/checkpoints/f2.json", "r/checkpoints/f1.json"]}
    assert claims_spec(CLAIMED, specs) == {"pairs": ["s", "a"], "artifacts": {"table1": specs["table1"], "fig5": specs["fig5"]}}


def test_table_measures_configured_artifacts_and_marks_the_rest_not_measured(tmp_path):
    files = {}
    for pid, changed in (("s", 95), ("r", 20)):
        p = tmp_path / f"{pid}.csv"
        pd.DataFrame({"name": ["w"], "kind": ["q"], "numel": [100], "changed_eta": [changed]}).to_csv(p, index=False)
        files[pid] = str(p)
    pairs = {"s": {"kind": "sft", "base": "b", "finetuned": "fs"}, "r": {"kind": "rl", "base": "b", "finetuned": "fr"}}
    ctx = TrainingContext("claims", {"table1/updates": [files["s"], files["r"]]},
                          {"pairs": ["s", "r"], "artifacts": {"table1": {"pairs": ["s", "r"]}}}, pairs, False, "t")
    table, md = C.claims_table(ctx)
    assert list(table["claim"]) == [c.claim_id for c in C.CLAIMS]
    row = table.set_index("claim").loc["rl_sparser_than_sft"]
    assert row["verdict"] == C.HOLDS and row["artifact"] == "table1" and "gap +75.0 pp" in row["measured"]
    rest = table[table["claim"] != "rl_sparser_than_sft"]
    assert set(rest["verdict"]) == {C.NOT_MEASURED}
    assert list(md.columns)[0] == "Verdict"


# ------------------------------------------------------------------ arXiv 2508.16546


def test_restoration_recovery_verdicts():
    assert C.decide_recovery(C.Recovery("top20", 0.8, diff(0.04, 0.02, 0.06))).verdict == C.HOLDS
    f = C.decide_recovery(C.Recovery("top20", 0.4, diff(0.02, 0.01, 0.03)))
    assert f.verdict == C.FAILS and "under 70%" in f.note
    assert C.decide_recovery(C.Recovery("top20", 0.9, diff(0.02, -0.01, 0.05))).verdict == C.NOISE
    assert C.decide_recovery(C.Recovery("top20", -0.5, diff(-0.03, -0.05, -0.01))).verdict == C.FAILS
    assert C.decide_recovery(None).verdict == C.NOT_MEASURED


def test_rl_after_sft_verdicts():
    good = [C.Recovery("a", 0.6, diff(0.03, 0.01, 0.05)), C.Recovery("b", 0.7, diff(0.04, 0.02, 0.06))]
    assert C.decide_rl_after_sft(good).verdict == C.HOLDS
    small = [C.Recovery("a", 0.1, diff(0.01, 0.005, 0.02)), C.Recovery("b", 0.2, diff(0.01, 0.002, 0.02))]
    assert C.decide_rl_after_sft(small).verdict == C.FAILS  # significant but a small share
    assert C.decide_rl_after_sft([*good, C.Recovery("c", 0.3, diff(0.01, -0.01, 0.03))]).verdict == C.NOISE
    assert C.decide_rl_after_sft([*good, C.Recovery("c", -1, diff(-0.03, -0.05, -0.01))]).verdict == C.FAILS
    assert C.decide_rl_after_sft([]).verdict == C.NOT_MEASURED


def test_sft_rotation_verdicts():
    # sin(6°) = 0.105 against a 0.3% singular-value change: 35x
    assert C.decide_sft_rotation([("sft", 6.0, 0.003)]).verdict == C.HOLDS
    assert C.decide_sft_rotation([("sft", 6.0, 0.02)]).verdict == C.FAILS  # 5x
    assert C.decide_sft_rotation([]).verdict == C.NOT_MEASURED
