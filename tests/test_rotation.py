import numpy as np
import pytest
import scipy.linalg
import torch

from offprincipal.checkpoints.naming import classify
from offprincipal.metrics.rotation import index_angles, layer_summary, rotation_curve, window_angles
from offprincipal.metrics.spectral import Spectrum


def _svd(w: np.ndarray) -> Spectrum:
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return Spectrum(S=torch.from_numpy(s), U=torch.from_numpy(u), V=torch.from_numpy(vt.T))


def _orth(rng, m, k):
    q, _ = np.linalg.qr(rng.standard_normal((m, k)))
    return q


def test_known_rotation_of_one_pair():
    rng = np.random.default_rng(0)
    m, n, k = 12, 6, 6  # full column rank, so the SVD has no arbitrary null vectors
    U, V = _orth(rng, m, k), _orth(rng, n, k)
    s = np.array([10.0, 8.0, 6.0, 4.0, 2.0, 1.0])
    # rotate left vectors 0 and 1 by 30 degrees in their plane; right vectors untouched
    t = np.deg2rad(30.0)
    U1 = U.copy()
    U1[:, 0] = np.cos(t) * U[:, 0] + np.sin(t) * U[:, 1]
    U1[:, 1] = -np.sin(t) * U[:, 0] + np.cos(t) * U[:, 1]
    s1 = s * np.array([1.1, 1, 1, 1, 1, 0.5])
    c = rotation_curve(_svd(U @ np.diag(s) @ V.T), _svd(U1 @ np.diag(s1) @ V.T), window=2)
    np.testing.assert_allclose(c["left_deg"].numpy(), [30, 30, 0, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(c["right_deg"].numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(c["rel_sv_change"].numpy(), [0.1, 0, 0, 0, 0, -0.5], atol=1e-10)
    # window [0, 2) spans the same plane: ~0; window [1, 3) mixes in direction 2 → scipy's answer
    ref = [np.rad2deg(scipy.linalg.subspace_angles(U[:, i : i + 2], U1[:, i : i + 2]).max()) for i in range(k - 1)]
    np.testing.assert_allclose(c["left_window_deg"].numpy(), ref, atol=1e-5)
    assert c["left_window_deg"][0] < 1e-5 and abs(float(c["left_window_deg"][1]) - 30) < 1e-5


def test_sign_flip_is_zero_degrees():
    rng = np.random.default_rng(1)
    U = _orth(rng, 10, 5)
    flipped = U * np.array([1, -1, 1, -1, -1])
    np.testing.assert_allclose(index_angles(torch.from_numpy(U), torch.from_numpy(flipped)).numpy(), 0, atol=1e-6)


def test_swapped_degenerate_pair_index_vs_window():
    rng = np.random.default_rng(2)
    m, n = 16, 12
    U, V = _orth(rng, m, 8), _orth(rng, n, 8)
    s = np.array([9.0, 7.0, 5.0, 5.0, 3.0, 2.0, 1.5, 1.0])  # indices 2, 3 degenerate
    perm = [0, 1, 3, 2, 4, 5, 6, 7]
    a = _svd(U @ np.diag(s) @ V.T)
    b = Spectrum(S=a.S.clone(), U=a.U[:, perm], V=a.V[:, perm])  # the same matrix, pair swapped
    c = rotation_curve(a, b, window=4)
    np.testing.assert_allclose(c["left_deg"].numpy()[2:4], 90, atol=1e-5)
    np.testing.assert_allclose(c["right_deg"].numpy()[2:4], 90, atol=1e-5)
    np.testing.assert_allclose(np.delete(c["left_deg"].numpy(), [2, 3]), 0, atol=1e-5)
    # windows holding both swapped indices (starts 0..2) see no rotation; start 3 splits the pair
    np.testing.assert_allclose(c["left_window_deg"].numpy()[:3], 0, atol=1e-5)
    assert float(c["left_window_deg"][3]) > 89


def test_window_angles_match_scipy_on_random_subspaces():
    rng = np.random.default_rng(3)
    a, b = _orth(rng, 20, 7), _orth(rng, 20, 7)
    got = window_angles(torch.from_numpy(a), torch.from_numpy(b), window=3).numpy()
    ref = [np.rad2deg(scipy.linalg.subspace_angles(a[:, i : i + 3], b[:, i : i + 3]).max()) for i in range(5)]
    np.testing.assert_allclose(got, ref, atol=1e-8)


def test_layer_summary_averages_matrices_of_a_layer():
    rng = np.random.default_rng(4)
    base = {n: _svd(rng.standard_normal((8, 6))) for n in ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight"]}
    tuned = {n: _svd((b.U @ torch.diag(b.S) @ b.V.T).numpy() + 0.1 * rng.standard_normal((8, 6))) for n, b in base.items()}
    curves = {n: rotation_curve(base[n], tuned[n], window=2) for n in base}
    out = layer_summary(curves, lambda name: classify(name).layer)
    assert sorted(out) == [0, 1]
    names0 = [n for n in curves if ".layers.0." in n]
    expect = np.mean([float(curves[n]["left_deg"].mean()) for n in names0])
    np.testing.assert_allclose(out[0]["left_deg_mean"], expect)
    np.testing.assert_allclose(out[1]["right_deg_max"], float(curves["model.layers.1.mlp.up_proj.weight"]["right_deg"].max()))


def test_rotation_tables_read_spectra_caches(tmp_path):
    from safetensors.torch import save_file

    from offprincipal.metrics.rotation import rotation_tables

    rng = np.random.default_rng(5)
    names = ["model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.o_proj.weight"]
    cache = {}
    for side in ("base", "ft"):
        d = {}
        for n in names:
            u, s, vt = np.linalg.svd(rng.standard_normal((8, 6)), full_matrices=False)
            cache[side, n] = (u, s, vt.T)
            d.update({f"{n}::S": torch.from_numpy(s), f"{n}::U": torch.from_numpy(u[:, :5].copy()), f"{n}::V": torch.from_numpy(vt.T[:, :5].copy())})
        save_file(d, str(tmp_path / f"{side}.safetensors"))
    curve, layers = rotation_tables(tmp_path / "base.safetensors", tmp_path / "ft.safetensors", window=2)
    assert len(curve) == 2 * 5 and sorted(layers["layer"]) == [0, 1]
    n = names[1]
    (u0, s0, v0), (u1, s1, v1) = cache["base", n], cache["ft", n]
    row = curve[(curve.tensor == n) & (curve["index"] == 3)].iloc[0]
    np.testing.assert_allclose(row.left_deg, np.rad2deg(np.arccos(min(1, abs(u0[:, 3] @ u1[:, 3])))), atol=1e-6)
    np.testing.assert_allclose(row.rel_sv_change, (s1[3] - s0[3]) / s0[3])
    np.testing.assert_allclose(row.right_window_deg, np.rad2deg(scipy.linalg.subspace_angles(v0[:, 3:5], v1[:, 3:5]).max()), atol=1e-6)
    assert np.isnan(curve[(curve.tensor == n) & (curve["index"] == 4)].iloc[0].left_window_deg)


def test_rotation_tables_name_a_matrix_missing_from_one_cache_and_skip_flagged_ones(tmp_path):
    import json

    from safetensors.torch import save_file

    from offprincipal.analysis import FLAGGED_KEY
    from offprincipal.metrics.rotation import rotation_tables

    rng = np.random.default_rng(6)
    names = ["model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"]

    def cache(path, which, flagged=None):
        d = {}
        for n in which:
            u, s, vt = np.linalg.svd(rng.standard_normal((6, 5)), full_matrices=False)
            d.update({f"{n}::S": torch.from_numpy(s), f"{n}::U": torch.from_numpy(u.copy()),
                      f"{n}::V": torch.from_numpy(vt.T.copy())})
        save_file(d, str(path), metadata={FLAGGED_KEY: json.dumps(flagged or {})})

    cache(tmp_path / "a.safetensors", names)
    cache(tmp_path / "b.safetensors", names[:1])
    with pytest.raises(KeyError, match="down_proj"):
        rotation_tables(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    cache(tmp_path / "c.safetensors", names, flagged={names[1]: "inf/NaN"})
    curve, _ = rotation_tables(tmp_path / "a.safetensors", tmp_path / "c.safetensors", window=2)
    assert set(curve.tensor) == {names[0]}
