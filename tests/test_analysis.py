"""The passes a rule runs, checked against direct computations on the safetensors files."""

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from offprincipal.analysis import SpectraFile, compare_pair, compute_spectra, cross_run_jaccard, pair_geometry
from offprincipal.checkpoints.synthetic import build_base, build_variant
from offprincipal.io import write_json
from offprincipal.metrics.masks import MaskFile

SIZES = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=64)


def manifest(tmp, name, path):
    write_json(tmp / f"{name}.json", {"name": name, "path": str(path)})
    return tmp / f"{name}.json"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    build_base(tmp / "base", seed=3, **SIZES)
    build_variant(tmp / "base", tmp / "rl_a", kind="offprincipal", seed=1, scale=1.0, shared_seed=5)
    build_variant(tmp / "base", tmp / "rl_b", kind="offprincipal", seed=2, scale=1.0, shared_seed=5)
    build_variant(tmp / "base", tmp / "sft", kind="dense", seed=4, scale=1.0)
    # the same RL checkpoint stored in fp32, as DeepScaleR is
    fp32 = tmp / "rl_a_fp32"
    fp32.mkdir()
    for f in (tmp / "rl_a").iterdir():
        if f.name == "model.safetensors":
            save_file({k: v.float() for k, v in load_file(f).items()}, fp32 / f.name)
        else:
            (fp32 / f.name).write_bytes(f.read_bytes())
    names = ["base", "rl_a", "rl_b", "sft", "rl_a_fp32"]
    return tmp, {n: manifest(tmp, n, tmp / n) for n in names}


def changed_bits(base_file, ft_file):
    """Independent count: bf16 bit patterns that differ, with +0 == -0."""
    a, b = load_file(base_file), load_file(ft_file)
    out = {}
    for name, x in a.items():
        y = b[name].to(torch.bfloat16)
        xi, yi = x.view(torch.int16), y.view(torch.int16)
        both_zero = ((xi & 0x7FFF) == 0) & ((yi & 0x7FFF) == 0)
        out[name] = int(((xi != yi) & ~both_zero).sum())
    return out


def test_compare_pair_counts_match_bitwise_bf16(world):
    tmp, m = world
    table = compare_pair(m["base"], m["rl_a"], updates_csv=tmp / "u.csv", masks_npz=tmp / "m.npz")
    expected = changed_bits(tmp / "base" / "model.safetensors", tmp / "rl_a" / "model.safetensors")
    got = dict(zip(table["name"], table["changed_eta"]))
    assert got == expected
    on_disk = pd.read_csv(tmp / "u.csv")
    assert dict(zip(on_disk["name"], on_disk["changed_eta"])) == expected
    with MaskFile(tmp / "m.npz") as mf:
        assert sorted(mf.names) == sorted(expected)
        assert {n: int(mf.mask(n).sum()) for n in mf.names} == expected


def test_fp32_stored_checkpoint_is_rounded_to_bf16_before_the_probe(world):
    tmp, m = world
    bf16 = compare_pair(m["base"], m["rl_a"], updates_csv=tmp / "a.csv", masks_npz=tmp / "a.npz")
    fp32 = compare_pair(m["base"], m["rl_a_fp32"], updates_csv=tmp / "b.csv", masks_npz=tmp / "b.npz")
    assert (fp32["ft_dtype"] == "float32").all()
    assert list(fp32["changed_eta"]) == list(bf16["changed_eta"])


def test_spectra_cache_matches_numpy_svd_of_bf16_weights(world):
    tmp, m = world
    compute_spectra(m["rl_a_fp32"], tmp / "s.safetensors", kinds=["q", "down"], top_k=8)
    weights = load_file(tmp / "rl_a" / "model.safetensors")
    sp = SpectraFile(tmp / "s.safetensors")
    assert sp.names == sorted(n for n in weights if n.endswith(("q_proj.weight", "down_proj.weight")))
    for name in sp.names:
        S, U, V = sp.get(name)
        w = weights[name].double().numpy()
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        np.testing.assert_allclose(S.numpy(), s, rtol=1e-10, atol=1e-14)
        assert U.shape == (w.shape[0], 8) and V.shape == (w.shape[1], 8)
        np.testing.assert_allclose(np.abs(np.diag(U.numpy().T @ u[:, :8])), 1.0, atol=1e-8)


def test_pair_geometry_against_scipy_and_direct_masks(world):
    tmp, m = world
    for n in ("base", "rl_a"):
        compute_spectra(m[n], tmp / f"{n}.spec", kinds=["q", "k", "v", "o", "gate", "up", "down"], top_k=16)
    compare_pair(m["base"], m["rl_a"], updates_csv=tmp / "g.csv", masks_npz=tmp / "g.npz")
    geo = pair_geometry(
        m["base"], m["rl_a"], tmp / "base.spec", tmp / "rl_a.spec", tmp / "g.npz",
        geometry_csv=tmp / "geo.csv", angles_csv=tmp / "ang.csv",
        angle_ks=[1, 2, 4, 8], report_k=4, principal_rank_k=4, mask_alpha=0.5,
    )
    w0s, w1s = load_file(tmp / "base" / "model.safetensors"), load_file(tmp / "rl_a" / "model.safetensors")
    row = geo.set_index("name").loc["model.layers.1.mlp.down_proj.weight"]
    w0 = w0s["model.layers.1.mlp.down_proj.weight"].double().numpy()
    w1 = w1s["model.layers.1.mlp.down_proj.weight"].double().numpy()
    u0, s0, vt0 = np.linalg.svd(w0, full_matrices=False)
    u1, s1, _ = np.linalg.svd(w1, full_matrices=False)
    assert row["nss"] == pytest.approx(np.linalg.norm(s1 - s0) / np.linalg.norm(s0), rel=1e-8)
    ref_angle = np.rad2deg(scipy.linalg.subspace_angles(u0[:, :4], u1[:, :4])).max()
    assert row["max_angle_U_deg"] == pytest.approx(ref_angle, rel=1e-5, abs=1e-9)
    # masks rebuilt directly: top-50% of |rank-4 reconstruction|, bottom-50% of |W0|
    recon = np.abs((u0[:, :4] * s0[:4]) @ vt0[:4]).reshape(-1)
    n = round(0.5 * recon.size)
    princ = np.zeros(recon.size, bool)
    princ[np.argsort(-recon, kind="stable")[:n]] = True
    low = np.zeros(recon.size, bool)
    low[np.argsort(np.abs(w0).reshape(-1), kind="stable")[:n]] = True
    upd = (w0 != w1).reshape(-1)
    assert row["overlap_low"] == pytest.approx((low & upd).sum() / upd.sum())
    assert row["overlap_princ"] == pytest.approx((princ & upd).sum() / upd.sum(), abs=2 / upd.sum())
    assert row["update_rank_ratio"] == pytest.approx(np.linalg.matrix_rank((w1 - w0).astype(np.float32)) / min(w0.shape))
    angles = pd.read_csv(tmp / "ang.csv")
    assert set(angles["k"]) == {1, 2, 4, 8} and set(angles["side"]) == {"U", "V"}


def test_cross_run_jaccard_restricted_to_a_block(world):
    tmp, m = world
    compare_pair(m["base"], m["rl_a"], updates_csv=tmp / "ja.csv", masks_npz=tmp / "ja.npz")
    compare_pair(m["base"], m["rl_b"], updates_csv=tmp / "jb.csv", masks_npz=tmp / "jb.npz")
    table = cross_run_jaccard({"a": tmp / "ja.npz", "b": tmp / "jb.npz"}, tmp / "j.csv", layer=1, kinds=["q", "k", "v", "o", "gate", "up", "down"])
    assert table.loc[0, "n_tensors"] == 7
    a, b = load_file(tmp / "rl_a" / "model.safetensors"), load_file(tmp / "rl_b" / "model.safetensors")
    base = load_file(tmp / "base" / "model.safetensors")
    inter = union = 0
    for name in base:
        if name.startswith("model.layers.1.") and name.endswith("proj.weight"):
            ma, mb = (a[name] != base[name]), (b[name] != base[name])
            inter += int((ma & mb).sum())
            union += int((ma | mb).sum())
    assert table.loc[0, "jaccard_pooled"] == pytest.approx(inter / union)
    # runs sharing a planted footprint overlap more than independent masks would
    assert table.loc[0, "jaccard_pooled"] > table.loc[0, "baseline_pooled"] + 0.1


def test_mismatched_pair_fails_naming_the_tensor_and_writes_nothing(world, tmp_path):
    tmp, m = world
    build_base(tmp_path / "other", seed=3, **{**SIZES, "intermediate_size": 48})
    other = manifest(tmp_path, "other", tmp_path / "other")
    with pytest.raises(ValueError, match="mlp"):
        compare_pair(m["base"], other, updates_csv=tmp_path / "u.csv", masks_npz=tmp_path / "m.npz")
    assert not (tmp_path / "u.csv").exists() and not (tmp_path / "m.npz").exists()


def test_manifest_pointing_to_missing_checkpoint_is_a_clear_error(tmp_path):
    bad = manifest(tmp_path, "gone", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="gone"):
        compare_pair(bad, bad, updates_csv=tmp_path / "u.csv", masks_npz=tmp_path / "m.npz")
