"""Spectral metrics against numpy/scipy."""

import numpy as np
import pytest
import scipy.linalg
import torch

from offprincipal.metrics.spectral import angle_curve, nss, principal_angles, spectrum, update_rank_ratio


def haar(n, k, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (32, 32)])  # tall, wide (transposed path), square
def test_spectrum_matches_numpy_svd(shape):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape)
    sp = spectrum(torch.from_numpy(w), top_k=5)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    np.testing.assert_allclose(sp.S.numpy(), s, rtol=1e-12)
    # singular vectors are defined up to sign: compare the projectors
    np.testing.assert_allclose(sp.U.numpy() @ sp.U.numpy().T, u[:, :5] @ u[:, :5].T, atol=1e-10)
    np.testing.assert_allclose(sp.V.numpy() @ sp.V.numpy().T, vt[:5].T @ vt[:5], atol=1e-10)
    assert sp.U.shape == (shape[0], 5) and sp.V.shape == (shape[1], 5)
    # the factors reconstruct w's best rank-5 approximation (pairs each u_i with its own v_i)
    np.testing.assert_allclose((sp.U * sp.S[:5]) @ sp.V.T, (u[:, :5] * s[:5]) @ vt[:5], atol=1e-10)


@pytest.mark.parametrize("scale", [1e-7, 1e-4, 1e-1, 10.0])
def test_principal_angles_match_scipy_from_tiny_to_large(scale):
    rng = np.random.default_rng(1)
    a = haar(200, 8, rng)
    b = a + scale * rng.standard_normal((200, 8))
    ours = principal_angles(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    ref = scipy.linalg.subspace_angles(a, b)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)


def test_principal_angles_resolve_rotations_that_arccos_loses():
    rng = np.random.default_rng(2)
    a = haar(300, 4, rng)
    theta = 1e-9  # radians; cos(theta) == 1.0 in float64
    perp = haar(300, 5, rng)[:, 4]
    perp -= a @ (a.T @ perp)
    perp /= np.linalg.norm(perp)
    b = a.copy()
    b[:, 0] = np.cos(theta) * a[:, 0] + np.sin(theta) * perp
    angles = principal_angles(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert angles.max() == pytest.approx(theta, rel=1e-5)
    # the cosine route is off by more than ten times the angle itself
    via_arccos = np.arccos(np.clip(np.linalg.svd(a.T @ b, compute_uv=False), -1, 1)).max()
    assert abs(via_arccos - theta) > 10 * theta


def test_nss_and_angle_curve_against_numpy():
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((30, 20))
    w1 = w0 + 1e-3 * rng.standard_normal((30, 20))
    s0 = np.linalg.svd(w0, compute_uv=False)
    s1 = np.linalg.svd(w1, compute_uv=False)
    sp0, sp1 = spectrum(torch.from_numpy(w0), 8), spectrum(torch.from_numpy(w1), 8)
    assert nss(sp0.S, sp1.S) == pytest.approx(np.linalg.norm(s1 - s0) / np.linalg.norm(s0), rel=1e-10)
    rows = angle_curve(sp0.U, sp1.U, [1, 4, 8], sp0.S)
    u0, _, _ = np.linalg.svd(w0, full_matrices=False)
    u1, _, _ = np.linalg.svd(w1, full_matrices=False)
    for row in rows:
        k = row["k"]
        ref = np.rad2deg(scipy.linalg.subspace_angles(u0[:, :k], u1[:, :k]))
        assert row["max_angle_deg"] == pytest.approx(ref.max(), rel=1e-6, abs=1e-9)
        assert row["gap"] == pytest.approx(s0[k - 1] - s0[k])


def test_update_rank_ratio_against_numpy():
    rng = np.random.default_rng(4)
    w0 = torch.from_numpy(rng.standard_normal((16, 12)).astype(np.float32))
    low_rank = torch.from_numpy((rng.standard_normal((16, 3)) @ rng.standard_normal((3, 12))).astype(np.float32))
    assert update_rank_ratio(w0, w0 + low_rank) == pytest.approx(np.linalg.matrix_rank((w0 + low_rank - w0).numpy()) / 12)
    assert update_rank_ratio(w0, w0) == 0.0


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])
def test_update_rank_ratio_equals_matrix_rank_on_tall_and_wide_updates(shape):
    rng = np.random.default_rng(5)
    m, n = shape
    w0 = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    for r in (1, 5, min(shape)):
        delta = (rng.standard_normal((m, r)) @ rng.standard_normal((r, n))).astype(np.float32)
        ratio = update_rank_ratio(w0, w0 + torch.from_numpy(delta))
        ref = np.linalg.matrix_rank(((w0 + torch.from_numpy(delta)) - w0).numpy()) / min(shape)
        assert ratio == pytest.approx(ref)
