"""Spectral metrics: singular values, principal subspaces and how fine-tuning moves them.

Each checkpoint's SVD is computed once (``spectrum``) and cached: all singular values
(for NSS and singular-value curves) and the top-k left/right singular vectors (for
principal angles and principal masks). The SVD is exact (LAPACK ``gesdd`` on the CPU,
``gesvd`` on CUDA, whose default ``gesvdj`` loses accuracy on large ill-conditioned
matrices); randomized SVD is too inaccurate for the sub-degree rotations RL produces.
A long matrix on the CPU takes LAPACK's own QR route but forms only the top-k left
vectors (:func:`_tall_top_k_svd`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Spectrum:
    S: torch.Tensor  # all singular values, descending
    U: torch.Tensor  # m × k, top-k left singular vectors (output space, torch [out, in] convention)
    V: torch.Tensor  # n × k, top-k right singular vectors (input space)


def thin_svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U, S, Vh`` of a 2-D matrix (thin, singular values descending), in its dtype and on its device.

    LAPACK's gesdd is several times slower on a wide matrix than on its transpose
    (down_proj 1536×8960: 11.6 s vs 3.0 s in MKL), so it always gets the tall one;
    W = U S Vᵀ ⇔ Wᵀ = V S Uᵀ, so the factors swap roles. On CUDA, gesvd: cuSOLVER's default
    (gesvdj) is iterative, gesvd matches LAPACK's accuracy."""
    driver = "gesvd" if x.is_cuda else None
    wide = x.shape[0] < x.shape[1]
    U, S, Vh = torch.linalg.svd(x.T if wide else x, full_matrices=False, driver=driver)
    if wide:
        U, Vh = Vh.T, U.T
    return U, S, Vh


def spectrum(w: torch.Tensor, top_k: int, *, dtype: torch.dtype = torch.float64) -> Spectrum:
    """All singular values and the top-k singular vectors of one weight matrix, in ``dtype``
    on ``w``'s device."""
    if w.ndim != 2:
        raise ValueError(f"spectrum needs a 2-D matrix, got shape {tuple(w.shape)}")
    x = w.to(dtype)
    k = min(top_k, min(x.shape))
    wide = x.shape[0] < x.shape[1]
    tall = x.T if wide else x
    if not x.is_cuda and tall.shape[0] >= _QR_ASPECT * tall.shape[1] and k < tall.shape[1]:
        U, S, V = _tall_top_k_svd(tall, k)
        return Spectrum(S=S, U=V, V=U) if wide else Spectrum(S=S, U=U, V=V)
    U, S, Vh = thin_svd(x)
    return Spectrum(S=S, U=U[:, :k].contiguous(), V=Vh[:k].T.contiguous())


#: a matrix at least this many times as long as wide gets the QR route (LAPACK's gesdd
#: switches to it at ~1.6 for its own thin SVD)
_QR_ASPECT = 2


def _tall_top_k_svd(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U_k`` (m × k), all singular values, ``V_k`` (n × k) of a tall ``x`` (m ≥ n): the
    route gesdd itself takes for a long matrix -- Householder QR, then the SVD of the n × n
    R -- except that Q is applied to the k wanted columns of R's left vectors (``ormqr``)
    instead of being formed whole and multiplied in. Same backward-stable steps, so the
    singular values agree with :func:`thin_svd` to rounding and the vectors span the same
    subspaces; on a 1.5B MLP matrix (8960 × 1536, fp64, 2 cores) 1.4 s against 2.3 s."""
    m, n = x.shape
    reflectors, tau = torch.geqrf(x)
    u_r, S, vh = torch.linalg.svd(reflectors[:n].triu())
    padded = torch.zeros(m, k, dtype=x.dtype, device=x.device)
    padded[:n] = u_r[:, :k]
    U = torch.ormqr(reflectors, tau, padded)  # Q @ [u_r[:, :k]; 0]
    return U, S, vh[:k].T.contiguous()


def nss(s0: torch.Tensor, s1: torch.Tensor) -> float:
    """Normalized spectrum shift ``‖σ(W+) − σ(W0)‖₂ / ‖σ(W0)‖₂`` over all singular values."""
    if s0.shape != s1.shape:
        raise ValueError(f"singular-value vectors differ in length: {tuple(s0.shape)} vs {tuple(s1.shape)}")
    s0 = s0.double()
    return float(torch.linalg.vector_norm(s1.double() - s0) / torch.linalg.vector_norm(s0))


def _orthonormal(a: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(a.double())
    return q


def principal_angles(a: torch.Tensor, b: torch.Tensor, *, orthonormal: bool = False) -> torch.Tensor:
    """Principal angles (radians, descending) between span(a) and span(b).

    Knyazev–Argentati, as ``scipy.linalg.subspace_angles``: small angles come from the
    sines (``σ((I − QaQaᵀ)Qb)``), large ones from the cosines (``σ(QaᵀQb)``), so angles of a
    hundredth of a degree are not lost to ``arccos`` near 1. ``orthonormal`` skips the QR
    for columns that already are (singular vectors).
    """
    qa, qb = (a.double(), b.double()) if orthonormal else (_orthonormal(a), _orthonormal(b))
    cross = qa.T @ qb
    cos = torch.linalg.svdvals(cross)  # descending
    if qa.shape[1] >= qb.shape[1]:
        resid = qb - qa @ cross
    else:
        resid = qa - qb @ cross.T
    use_sine = cos**2 >= 0.5
    if bool(use_sine.any()):
        sin = torch.linalg.svdvals(resid)  # descending sines ↔ descending angles
        from_sine = torch.arcsin(sin.clamp(-1.0, 1.0)[: cos.numel()])
    else:
        from_sine = torch.zeros_like(cos)
    from_cos = torch.arccos(cos.flip(0).clamp(-1.0, 1.0))  # ascending cosines ↔ descending angles
    return torch.where(use_sine, from_sine, from_cos)


def angle_curve(u0: torch.Tensor, u1: torch.Tensor, ks, s0: torch.Tensor | None = None, *, orthonormal: bool = False) -> list[dict]:
    """Max and mean principal angle (degrees) between the top-k subspaces, for each k,
    with the spectral gap ``γ_k = σ_k − σ_{k+1}`` of the base (Wedin's bound ‖ΔW‖₂/γ_k).
    ``orthonormal``: the columns are singular vectors (orthonormal), no QR needed."""
    rows = []
    for k in ks:
        if k > u0.shape[1] or k > u1.shape[1]:
            continue
        theta = torch.rad2deg(principal_angles(u0[:, :k], u1[:, :k], orthonormal=orthonormal))
        gap = float("nan")
        if s0 is not None and k < s0.numel():
            gap = float(s0[k - 1] - s0[k])
        rows.append({"k": k, "max_angle_deg": float(theta.max()), "mean_angle_deg": float(theta.mean()), "gap": gap})
    return rows


def update_rank_ratio(w0: torch.Tensor, w1: torch.Tensor) -> float:
    """Rank of ΔW over min(m, n) (Mukherjee et al.): the number of singular values above
    ``matrix_rank``'s default fp32 tolerance τ = σ_max·max(m, n)·eps_fp32.

    Most updates are full rank, and that can be proved without the singular values
    (:func:`certified_full_rank`): first from a subset of 2·n rows (σ_min of a row subset
    bounds σ_min of the whole from below), then, if that fails, from all rows. On a 1.5B MLP
    matrix (8960 × 1536) the subset takes 0.18 s, all rows 0.28 s, the fp32 SVD 0.51 s. Tried
    on matrices at least twice as long as wide; otherwise, or when neither proves it, the
    singular values are counted by :func:`_gram_rank`."""
    delta = w1.float() - w0.float()
    frobenius_sq = _frobenius_sq(delta)  # also the certificate's bound on σ_max²
    if frobenius_sq == 0.0:
        return 0.0
    # a noise-like update of a square matrix has σ_min near σ_max/n, below what the
    # certificate can prove, so there it would only add a Cholesky to the count
    long_side, short_side = max(delta.shape), min(delta.shape)
    if long_side >= 2 * short_side:
        subset = _SUBSET_ROWS * short_side
        by_subset = subset < long_side and certified_full_rank(delta, rows=subset, frobenius_sq=frobenius_sq)
        if by_subset or certified_full_rank(delta):
            return 1.0
    return _gram_rank(delta) / short_side


#: the row-subset certificate uses this many times the short side's length in rows
_SUBSET_ROWS = 2


def _gram_rank(delta: torch.Tensor) -> int:
    """The number of singular values above τ, as eigenvalues of the fp64 Gram ``ΔᵀΔ``
    (σᵢ² = λᵢ, τ² = λ_max·(max(m,n)·eps_fp32)²). The Gram of fp32 values in fp64 is exact up
    to ~n·eps_fp64·‖Δ‖_F², far below τ², so this counts as finely as the fp32 SVD (whose
    error is ~eps_fp32·σ_max) and, on one core, in 0.30 s against its 0.53 s (1536 × 1536).
    torch's ``eigvalsh``, not scipy's: scipy's LAPACK wrappers hold the GIL, so the geometry
    pass's other worker would wait through every call."""
    x = delta.T if delta.shape[0] < delta.shape[1] else delta
    eigenvalues = torch.linalg.eigvalsh(_gram(x.double()))
    tol_sq = float(eigenvalues.max()) * (max(delta.shape) * torch.finfo(torch.float32).eps) ** 2
    return int(torch.count_nonzero(eigenvalues > tol_sq))


def _gram(x: torch.Tensor) -> torch.Tensor:
    """``xᵀx`` (x tall): numpy hands it to BLAS syrk on the CPU, half the flops of torch's gemm."""
    if x.device.type == "cpu":
        a = x.numpy()
        return torch.from_numpy(a.T @ a)
    return x.T @ x


def _frobenius_sq(x: torch.Tensor) -> float:
    """``‖x‖_F²`` accumulated in fp64, rounded up by a bound of its rounding error."""
    eps = torch.finfo(torch.float64).eps
    return float(torch.linalg.vector_norm(x, dtype=torch.float64)) ** 2 * (1 + 4 * eps * x.numel())


def certified_full_rank(delta: torch.Tensor, *, rows: int | None = None, frobenius_sq: float | None = None) -> bool:
    """True only if every singular value of ``delta`` exceeds τ = σ_max·max(m,n)·eps_fp32.

    In the tall orientation (m × n, m ≥ n) take ``rows`` of the m rows, evenly spaced (all
    without ``rows``), as A, and ``G = AᵀA`` in fp64. Since ΔᵀΔ = AᵀA + (the rest)ᵀ(the rest)
    ⪰ G, λ_min(G) ≤ σ_min(Δ)². An upper bound of σ_max(Δ)²: ‖G‖_F ≥ λ_max(G) when A is all
    of Δ, ‖Δ‖_F² (``frobenius_sq`` where the caller has it) for a subset. With
    ``τ_hi² = (max(m,n)·eps_fp32)²·that bound ≥ τ²``, a Cholesky of ``G − (τ_hi² + s)·I``
    succeeds only if λ_min(G) > τ_hi² up to rounding; ``s`` covers the rounding of the Gram
    product (≤ rows·eps·‖A‖_F²) and of the factorisation (≤ n·eps·‖G‖), so success proves
    full rank. False means "not proved" (a rank-deficient or badly conditioned update), not
    "deficient"."""
    x = delta.T if delta.shape[0] < delta.shape[1] else delta
    m, n = x.shape
    c = max(delta.shape) * torch.finfo(torch.float32).eps
    eps = torch.finfo(torch.float64).eps
    if rows is not None and rows < m:
        if rows < n:
            raise ValueError(f"a row subset needs at least the short side's {n} rows, got {rows}")
        sigma_max_sq = frobenius_sq if frobenius_sq is not None else _frobenius_sq(x)
        x = x[torch.linspace(0, m - 1, rows, dtype=torch.float64).round().long()]
        m = rows
    else:
        sigma_max_sq = None
    g = _gram(x.double())
    fro, trace = float(torch.linalg.matrix_norm(g)), float(torch.trace(g))
    shift = c * c * (fro if sigma_max_sq is None else sigma_max_sq) + 4 * eps * (m + n) * (trace + fro)
    g.diagonal().sub_(shift)
    _, info = torch.linalg.cholesky_ex(g)  # torch's, as it releases the GIL (see _gram_rank)
    return int(info) == 0


def default_angle_ks(top_k: int) -> list[int]:
    """1, 2, 4, ... up to top_k (top_k itself included)."""
    ks = [2**i for i in range(int(math.log2(max(top_k, 1))) + 1)]
    if ks[-1] != top_k:
        ks.append(top_k)
    return ks
