"""A matrix holding inf/NaN through the three passes: counted in the sparsity pass, skipped
and flagged (by name) in the spectral pass and in the pair geometry, the rest computed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from offprincipal.analysis import SpectraFile, compare_pair, compute_spectra, pair_geometry
from offprincipal.checkpoints.synthetic import build_base, build_variant
from offprincipal.io import write_json

SIZES = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=64)
KINDS = ["q", "k", "v", "o", "gate", "up", "down"]
BAD_FT = "model.layers.0.self_attn.o_proj.weight"  # finite in the base, inf/NaN in the fine-tune
BAD_BASE = "model.layers.1.mlp.up_proj.weight"  # NaN in the base, left as is by the fine-tune


def _manifest(tmp, name):
    write_json(tmp / f"{name}.json", {"name": name, "path": str(tmp / name)})
    return tmp / f"{name}.json"


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nonfinite")
    build_base(tmp / "clean_base", seed=3, **SIZES)
    build_variant(tmp / "clean_base", tmp / "clean_ft", kind="dense", seed=4, scale=1.0)
    for side in ("base", "ft"):
        shutil.copytree(tmp / f"clean_{side}", tmp / side)
    base = load_file(tmp / "base" / "model.safetensors")
    ft = load_file(tmp / "ft" / "model.safetensors")
    ft[BAD_FT] = ft[BAD_FT].clone()
    ft[BAD_FT][0, :3] = torch.tensor([float("inf"), float("-inf"), float("nan")])
    base[BAD_BASE] = base[BAD_BASE].clone()
    base[BAD_BASE][2, 5] = float("nan")
    ft[BAD_BASE] = base[BAD_BASE].clone()  # the same NaN code on both sides: unchanged there
    ft[BAD_BASE][0, 0] = ft[BAD_BASE][0, 0] * 2  # and one real change elsewhere
    save_file(base, tmp / "base" / "model.safetensors", metadata={"format": "pt"})
    save_file(ft, tmp / "ft" / "model.safetensors", metadata={"format": "pt"})
    return tmp, {n: _manifest(tmp, n) for n in ("base", "ft", "clean_base", "clean_ft")}


def test_sparsity_pass_counts_non_finite_entries_per_side(poisoned):
    tmp, m = poisoned
    table = compare_pair(m["base"], m["ft"], updates_csv=tmp / "u.csv", masks_npz=tmp / "u.npz").set_index("name")
    assert (table.loc[BAD_FT, "nonfinite_base"], table.loc[BAD_FT, "nonfinite_ft"]) == (0, 3)
    assert (table.loc[BAD_BASE, "nonfinite_base"], table.loc[BAD_BASE, "nonfinite_ft"]) == (1, 1)
    assert table.loc[BAD_BASE, "changed_eta"] == 1  # the identical NaN is not a change
    others = table.drop(index=[BAD_FT, BAD_BASE])
    assert (others[["nonfinite_base", "nonfinite_ft"]] == 0).all().all()
    on_disk = pd.read_csv(tmp / "u.csv").set_index("name")
    assert on_disk.loc[BAD_FT, "nonfinite_ft"] == 3
    # the existing columns are all still there, in their order
    assert list(on_disk.reset_index().columns[:12]) == [
        "name", "layer", "kind", "proj", "expert", "shape", "numel", "base_dtype", "ft_dtype",
        "changed_eta", "changed_abs", "note",
    ]


def test_spectral_pass_flags_the_bad_matrix_and_computes_the_rest(poisoned):
    tmp, m = poisoned
    flagged = compute_spectra(m["ft"], tmp / "ft.spec", kinds=KINDS, top_k=8)
    # the fine-tune holds inf/NaN in BAD_FT and keeps the base's NaN in BAD_BASE
    assert flagged == {BAD_FT: "2 inf, 1 NaN entries", BAD_BASE: "0 inf, 1 NaN entries"}
    sp = SpectraFile(tmp / "ft.spec")
    assert sp.flagged == flagged  # recorded in the file's metadata
    S, U, V = sp.get(BAD_FT)
    assert torch.isnan(S).all() and torch.isnan(U).all() and torch.isnan(V).all()
    # every other matrix: the same spectrum as a clean run over the same weights
    w = load_file(tmp / "ft" / "model.safetensors")
    for name in sp.names:
        if name in flagged:
            continue
        s = np.linalg.svd(w[name].double().numpy(), compute_uv=False)
        np.testing.assert_allclose(sp.get(name)[0].numpy(), s, rtol=1e-10, atol=1e-14)
    with safe_open(str(tmp / "ft.spec"), framework="pt") as fh:  # a valid safetensors file
        assert json.loads(fh.metadata()["flagged"]) == flagged


def test_pair_geometry_keeps_a_flagged_row_and_computes_the_rest(poisoned):
    tmp, m = poisoned
    compare_pair(m["base"], m["ft"], updates_csv=tmp / "g.csv", masks_npz=tmp / "g.npz")
    for side in ("base", "ft"):
        compute_spectra(m[side], tmp / f"{side}.s", kinds=KINDS, top_k=8)
    compare_pair(m["clean_base"], m["clean_ft"], updates_csv=tmp / "c.csv", masks_npz=tmp / "c.npz")
    for side in ("clean_base", "clean_ft"):
        compute_spectra(m[side], tmp / f"{side}.s", kinds=KINDS, top_k=8)
    kw = dict(angle_ks=[1, 2, 4, 8], report_k=4, principal_rank_k=4, mask_alpha=0.5)
    geo = pair_geometry(m["base"], m["ft"], tmp / "base.s", tmp / "ft.s", tmp / "g.npz",
                        geometry_csv=tmp / "geo.csv", angles_csv=tmp / "ang.csv", **kw).set_index("name")
    clean = pair_geometry(m["clean_base"], m["clean_ft"], tmp / "clean_base.s", tmp / "clean_ft.s", tmp / "c.npz",
                          geometry_csv=tmp / "cgeo.csv", angles_csv=tmp / "cang.csv", **kw).set_index("name")
    assert "fine-tuned spectrum skipped: 2 inf, 1 NaN entries" in geo.loc[BAD_FT, "flag"]
    assert "base spectrum skipped: 0 inf, 1 NaN entries" in geo.loc[BAD_BASE, "flag"]
    for bad in (BAD_FT, BAD_BASE):
        assert "update rank skipped" in geo.loc[bad, "flag"]
        assert np.isnan(geo.loc[bad, ["nss", "max_angle_U_deg", "overlap_princ", "update_rank_ratio"]].astype(float)).all()
        assert 0 < geo.loc[bad, "update_density"] <= 1
    good = geo.drop(index=[BAD_FT, BAD_BASE])
    assert (good["flag"].fillna("") == "").all()
    cols = ["nss", "max_angle_U_deg", "max_angle_V_deg", "overlap_princ", "overlap_low", "update_rank_ratio"]
    pd.testing.assert_frame_equal(good[cols], clean.loc[good.index, cols])
    angles = pd.read_csv(tmp / "ang.csv")
    assert not angles["name"].isin([BAD_FT, BAD_BASE]).any()
    assert set(angles["name"]) == set(good.index)


def test_the_compare_report_lists_flagged_matrices_and_leaves_them_out_of_the_means(poisoned, tmp_path):
    from offprincipal.checkpoints.lineage import lineage_report
    from offprincipal.compare.numbers import PairInputs
    from offprincipal.compare.report import write_report

    tmp, m = poisoned
    compare_pair(m["base"], m["ft"], updates_csv=tmp_path / "u.csv", masks_npz=tmp_path / "m.npz")
    for side in ("base", "ft"):
        compute_spectra(m[side], tmp_path / f"{side}.s", kinds=KINDS, top_k=8)
    pair_geometry(m["base"], m["ft"], tmp_path / "base.s", tmp_path / "ft.s", tmp_path / "m.npz",
                  geometry_csv=tmp_path / "g.csv", angles_csv=tmp_path / "a.csv",
                  angle_ks=[1, 2, 4, 8], report_k=4, principal_rank_k=4, mask_alpha=0.5)
    lineage_report(m["base"], m["ft"], tmp_path / "lineage.json")
    pi = PairInputs("p", "base", "ft", "base → ft", tmp_path / "u.csv", tmp_path / "g.csv", tmp_path / "a.csv",
                    tmp_path / "m.npz", tmp_path / "lineage.json", tmp_path / "base.s", tmp_path / "ft.s")
    out = {k: tmp_path / f"r.{k}" for k in ("html", "json", "s.csv", "g.csv", "j.csv", "c.csv")}
    report = write_report([pi], base={"id": "base", "display": "base", "source": "local"},
                          finetuned=[{"id": "ft", "display": "ft", "source": "local"}],
                          metrics={"eta": 1e-3, "abs_tolerance": 1e-5, "report_k": 4, "principal_rank_k": 4, "mask_alpha": 0.5},
                          html_path=out["html"], json_path=out["json"], sparsity_csv=out["s.csv"],
                          geometry_csv=out["g.csv"], jaccard_csv=out["j.csv"], consensus_csv=out["c.csv"])
    geo = pd.read_csv(tmp_path / "g.csv")
    good = geo[geo["flag"].fillna("") == ""]
    p = report["pairs"]["p"]
    assert sorted(f["name"] for f in p["geometry"]["flagged"]) == sorted([BAD_FT, BAD_BASE])
    assert p["geometry"]["overall"]["flagged"] == 2 and p["geometry"]["overall"]["matrices"] == len(geo)
    assert p["geometry"]["overall"]["nss"] == pytest.approx(good["nss"].mean(), rel=1e-12)
    assert sorted(t["name"] for t in p["nonfinite_tensors"]) == sorted([BAD_FT, BAD_BASE])
    assert "2 matrices were left out of the spectral metrics" in report["summary"]
    page = out["html"].read_text()
    assert "Matrices left out of the spectral metrics" in page and BAD_FT in page


def test_geometry_trusts_the_spectral_pass_finiteness_only_for_the_same_values(poisoned, tmp_path):
    """Pair geometry skips its own inf/NaN scan of a side whose spectrum was computed from the
    same values without a flag; spectra of the stored (not bf16-rounded) values, or flagged
    ones, do not vouch for the bf16-rounded weights."""
    tmp, m = poisoned
    spectra = tmp_path / "s.safetensors"
    compute_spectra(m["base"], spectra, kinds=KINDS, top_k=4, cast_to_bf16=True)
    f = SpectraFile(spectra)
    assert f.found_finite("model.layers.0.mlp.up_proj.weight", True)
    assert not f.found_finite("model.layers.0.mlp.up_proj.weight", False)  # other values than those checked
    assert not f.found_finite(BAD_BASE, True)  # flagged: the scan must name what it holds
