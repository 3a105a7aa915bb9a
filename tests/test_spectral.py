"""Spectral metrics against numpy/scipy."""

import numpy as np
import pytest
import scipy.linalg
import torch

from offprincipal.metrics.spectral import angle_curve, nss, principal_angles, spectrum, update_rank_ratio


def haar(n, k, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


# tall, wide (transposed path), square, and long both ways (the QR route: top-k left vectors only)
@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (32, 32), (96, 24), (24, 96)])
def test_spectrum_matches_numpy_svd(shape):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape)
    sp = spectrum(torch.from_numpy(w), top_k=5)
    for factor in (sp.U, sp.V):  # orthonormal columns, as the angle code assumes
        np.testing.assert_allclose(factor.numpy().T @ factor.numpy(), np.eye(5), atol=1e-12)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    np.testing.assert_allclose(sp.S.numpy(), s, rtol=1e-12)
    # singular vectors are defined up to sign: compare the projectors
    np.testing.assert_allclose(sp.U.numpy() @ sp.U.numpy().T, u[:, :5] @ u[:, :5].T, atol=1e-10)
    np.testing.assert_allclose(sp.V.numpy() @ sp.V.numpy().T, vt[:5].T @ vt[:5], atol=1e-10)
    assert sp.U.shape == (shape[0], 5) and sp.V.shape == (shape[1], 5)
    # the factors reconstruct w's best rank-5 approximation (pairs each u_i with its own v_i)
    np.testing.assert_allclose((sp.U * sp.S[:5]) @ sp.V.T, (u[:, :5] * s[:5]) @ vt[:5], atol=1e-10)


@pytest.mark.parametrize("top_k", [7, 24, 50])  # fewer than, exactly and more than the short side
def test_long_matrix_spectrum_of_a_graded_spectrum(top_k):
    """Singular values spread over ten decades (as a trained layer's tail can be): the QR
    route keeps their relative accuracy and the top vectors of a well-separated spectrum."""
    rng = np.random.default_rng(4)
    s_true = np.logspace(0, -10, 24)
    w = haar(120, 24, rng) * s_true @ haar(24, 24, rng).T
    sp = spectrum(torch.from_numpy(w), top_k=top_k)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    k = min(top_k, 24)
    assert sp.U.shape == (120, k) and sp.V.shape == (24, k)
    np.testing.assert_allclose(sp.S.numpy(), s, rtol=1e-5)  # numpy itself is only this close to s_true
    np.testing.assert_allclose(sp.S.numpy()[:8], s_true[:8], rtol=1e-12)
    for ours, ref in ((sp.U.numpy(), u), (sp.V.numpy(), vt.T)):
        np.testing.assert_allclose(np.abs(np.sum(ours[:, :5] * ref[:, :5], axis=0)), 1.0, atol=1e-12)


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


def _with_singular_values(m, n, s, rng):
    """An m × n matrix with exactly the singular values ``s`` (descending), random vectors."""
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (u * s) @ v.T


@pytest.mark.parametrize("shape", [(80, 80), (90, 70), (70, 90)])  # short of 2:1, the Gram's eigenvalues count
def test_update_rank_counts_singular_values_either_side_of_the_tolerance(shape):
    """Singular values set by construction just above and below τ = σ_max·max(m,n)·eps_fp32
    (±10%, far wider than the fp32 rounding of ΔW, ~eps_fp32·σ_max): those above count,
    those below do not."""
    rng = np.random.default_rng(11)
    m, n = shape
    r = min(shape)
    tau = max(shape) * np.finfo(np.float32).eps  # σ_max = 1
    s = np.linspace(1.0, 0.2, r)
    s[-5:] = [1.1 * tau, 0.9 * tau, 0.5 * tau, 1e-3 * tau, 0.0]
    delta = torch.from_numpy(_with_singular_values(m, n, s, rng).astype(np.float32))
    assert update_rank_ratio(torch.zeros(shape), delta) == (r - 4) / r
    s[-5:] = [0.5, 0.4, 0.3, 1.1 * tau, 1.2 * tau]  # all above: full rank
    delta = torch.from_numpy(_with_singular_values(m, n, s, rng).astype(np.float32))
    assert update_rank_ratio(torch.zeros(shape), delta) == 1.0


@pytest.mark.parametrize("rows", [None, 120])  # all rows; the row subset (2 × the short side)
@pytest.mark.parametrize("shape", [(300, 60), (60, 300)])
def test_full_rank_certificate_never_claims_a_singular_value_below_the_tolerance(shape, rows):
    from offprincipal.metrics.spectral import certified_full_rank

    rng = np.random.default_rng(6)
    m, n = shape
    r = min(shape)
    tau_rel = max(shape) * np.finfo(np.float32).eps  # matrix_rank's fp32 tolerance over σ_max
    for smallest in (0.5 * tau_rel, 0.99 * tau_rel, 1e-6, 0.0):  # at or below τ: never certified
        s = np.linspace(1.0, 0.1, r)
        s[-1] = smallest
        delta = torch.from_numpy(_with_singular_values(m, n, s, rng).astype(np.float32))
        assert not certified_full_rank(delta, rows=rows), smallest
        assert update_rank_ratio(torch.zeros(shape), delta) == pytest.approx(np.linalg.matrix_rank(delta.numpy()) / r)
    # well above τ (a flat-ish spectrum, like a noise-like RL update): certified, and full rank it is
    s = np.linspace(1.0, 0.3, r)
    delta = torch.from_numpy(_with_singular_values(m, n, s, rng).astype(np.float32))
    assert certified_full_rank(delta, rows=rows)
    assert np.linalg.matrix_rank(delta.numpy()) == r
    assert update_rank_ratio(torch.zeros(shape), delta) == 1.0


def test_bf16_ulp_update_is_certified_and_full_rank_like_the_svd():
    from offprincipal.metrics.spectral import certified_full_rank

    g = torch.Generator().manual_seed(7)
    w0 = (torch.randn(400, 96, generator=g) * 0.02).to(torch.bfloat16)
    moved = torch.rand(400, 96, generator=g) < 0.4
    w1 = torch.where(moved, w0.view(torch.int16) + 1, w0.view(torch.int16)).view(torch.bfloat16)
    delta = w1.float() - w0.float()
    assert certified_full_rank(delta)
    assert certified_full_rank(delta, rows=192)  # the subset update_rank_ratio tries first
    assert update_rank_ratio(w0, w1) == np.linalg.matrix_rank(delta.numpy()) / 96 == 1.0


def test_row_subset_certificate_needs_the_whole_update_not_just_its_rows():
    """A 300 × 60 update that is full rank only through rows the subset skips: the subset
    cannot prove it (its own rows are rank deficient), the full certificate or the SVD can."""
    from offprincipal.metrics.spectral import certified_full_rank

    rng = np.random.default_rng(8)
    delta = np.zeros((300, 60), dtype=np.float32)
    picked = np.round(np.linspace(0, 299, 120)).astype(int)
    skipped = np.setdiff1d(np.arange(300), picked)
    delta[picked] = rng.standard_normal((120, 3)) @ rng.standard_normal((3, 60))  # rank 3 on the subset
    delta[skipped] = rng.standard_normal((skipped.size, 60))
    delta_t = torch.from_numpy(delta)
    assert not certified_full_rank(delta_t, rows=120)
    assert np.linalg.matrix_rank(delta) == 60
    assert update_rank_ratio(torch.zeros(300, 60), delta_t) == 1.0
    with pytest.raises(ValueError, match="at least the short side's 60 rows"):
        certified_full_rank(delta_t, rows=59)

