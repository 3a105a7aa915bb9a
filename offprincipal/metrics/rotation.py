"""Per-index singular-vector rotation between a base and a fine-tuned SVD of one matrix.

Jin et al. (arXiv 2508.16546) find SFT rotates singular vectors while singular values barely
move. Per index i: ``angle_i = arccos(min(1, |<u_i, u'_i>|))`` (degrees) for the left and right
vectors — the absolute value makes it sign-invariant, as a singular vector is defined up to
sign — beside the relative singular-value change ``(σ'_i − σ_i) / σ_i``.

Index matching is ill-posed where singular values are near-degenerate: two vectors of a
nearly-equal pair may swap or mix freely, giving ~90° per index with no real change of the
subspace. So we also report, for each window ``[i, i+w)``, the largest principal angle between
``span(U[:, i:i+w])`` and ``span(U'[:, i:i+w])``, which is invariant to any rotation inside
the window.
"""

from __future__ import annotations

import torch

from offprincipal.metrics.spectral import Spectrum, principal_angles


def index_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Degrees between column i of ``a`` and column i of ``b`` (unit columns), sign-invariant:
    ``arccos(min(1, |<a_i, b_i>|))``."""
    if a.shape != b.shape:
        raise ValueError(f"singular-vector blocks differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.double(), b.double()
    dot = (a * b).sum(0)
    # arccos(min(1, |dot|)) loses ~1e-6° to rounding near 1 (sub-degree RL rotations matter);
    # for unit vectors 2·arcsin(‖a − sign(dot)·b‖/2) is the same angle, computed stably.
    sign = torch.where(dot < 0, -1.0, 1.0).to(a.dtype)
    chord = torch.linalg.vector_norm(a - sign * b, dim=0)
    return torch.rad2deg(2 * torch.arcsin((chord / 2).clamp(max=1.0)))


def window_angles(a: torch.Tensor, b: torch.Tensor, window: int = 4) -> torch.Tensor:
    """Largest principal angle (degrees) between span(a[:, i:i+w]) and span(b[:, i:i+w]),
    for each start i with a full window (i = 0 .. k−w)."""
    if a.shape != b.shape:
        raise ValueError(f"singular-vector blocks differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    k = a.shape[1]
    out = [principal_angles(a[:, i : i + window], b[:, i : i + window], orthonormal=True).max() for i in range(k - window + 1)]
    return torch.rad2deg(torch.stack(out)) if out else torch.empty(0, dtype=torch.float64)


def rotation_curve(base: Spectrum, tuned: Spectrum, *, window: int = 4) -> dict[str, torch.Tensor]:
    """Per-index curve over the cached top-k vectors of one matrix.

    ``left_deg``/``right_deg``: per-index angles; ``rel_sv_change``: (σ'_i − σ_i)/σ_i (nan
    where σ_i = 0); ``left_window_deg``/``right_window_deg``: windowed subspace angles,
    entry i for window [i, i+window)."""
    k = min(base.U.shape[1], tuned.U.shape[1], base.V.shape[1], tuned.V.shape[1])
    if base.S.shape != tuned.S.shape:
        raise ValueError(f"singular-value vectors differ in length: {tuple(base.S.shape)} vs {tuple(tuned.S.shape)}")
    s0, s1 = base.S[:k].double(), tuned.S[:k].double()
    rel = torch.where(s0 != 0, (s1 - s0) / s0, torch.full_like(s0, float("nan")))
    U0, U1, V0, V1 = base.U[:, :k], tuned.U[:, :k], base.V[:, :k], tuned.V[:, :k]
    return {
        "left_deg": index_angles(U0, U1),
        "right_deg": index_angles(V0, V1),
        "rel_sv_change": rel,
        "left_window_deg": window_angles(U0, U1, window),
        "right_window_deg": window_angles(V0, V1, window),
    }


def summarize(curve: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean and max of each curve, for per-layer tables (means of per-matrix summaries)."""
    out: dict[str, float] = {}
    for name, values in curve.items():
        v = values.double()
        v = v[~torch.isnan(v)]
        out[f"{name}_mean"] = float(v.mean()) if v.numel() else float("nan")
        out[f"{name}_max"] = float(v.abs().max()) if v.numel() else float("nan")
    return out


def layer_summary(curves: dict[str, dict[str, torch.Tensor]], layer_of) -> dict[int, dict[str, float]]:
    """Average the per-matrix summaries over the matrices of each layer.

    ``curves``: matrix name → ``rotation_curve``; ``layer_of``: name → layer number or None
    (non-layer matrices are left out)."""
    groups: dict[int, list[dict[str, float]]] = {}
    for name, curve in curves.items():
        layer = layer_of(name)
        if layer is not None:
            groups.setdefault(layer, []).append(summarize(curve))
    return {layer: {key: sum(s[key] for s in rows) / len(rows) for key in rows[0]} for layer, rows in sorted(groups.items())}


def rotation_tables(base_spectra, ft_spectra, *, window: int = 4):
    """Per-index and per-layer rotation tables of every matrix the two spectra caches share
    (``analysis.compute_spectra`` outputs, ``NAME::S/U/V``), so no SVD is recomputed.

    Returns ``(curve, layers)`` DataFrames: ``curve`` has one row per (tensor, index) with
    ``left_deg``, ``right_deg``, ``rel_sv_change`` and the window angles of the window
    starting there (NaN where no full window starts); ``layers`` has the per-layer means of
    the per-matrix summaries. Matrices flagged in either cache (inf/NaN, failed SVD) are left
    out; a matrix missing from one cache is an error naming it."""
    import pandas as pd

    from offprincipal.analysis import SpectraFile
    from offprincipal.checkpoints.naming import classify

    a, b = SpectraFile(base_spectra), SpectraFile(ft_spectra)
    missing = sorted(set(a.names) ^ set(b.names))
    if missing:
        raise KeyError(f"spectra caches {a.path} and {b.path} differ in matrices, e.g. {missing[:3]}")
    rows, curves = [], {}
    for name in a.names:
        if name in a.flagged or name in b.flagged:
            continue
        c = rotation_curve(Spectrum(*a.get(name)), Spectrum(*b.get(name)), window=window)
        curves[name] = c
        k = c["left_deg"].numel()
        pad = lambda t: torch.cat([t, torch.full((k - t.numel(),), float("nan"), dtype=torch.float64)])  # noqa: E731
        cols = {key: (pad(v) if "window" in key else v).tolist() for key, v in c.items()}
        layer = classify(name).layer
        rows += [{"tensor": name, "layer": layer, "index": i, **{key: cols[key][i] for key in cols}} for i in range(k)]
    per_layer = layer_summary(curves, lambda n: classify(n).layer)
    layers = pd.DataFrame([{"layer": layer, **s} for layer, s in per_layer.items()])
    return pd.DataFrame(rows), layers


def write_rotation_tables(base_spectra, ft_spectra, *, curve_csv, layers_csv, window: int = 4) -> None:
    """:func:`rotation_tables` written atomically as two CSVs (the pair_rotation rule)."""
    from offprincipal.io import write_table

    curve, layers = rotation_tables(base_spectra, ft_spectra, window=window)
    if curve.empty:
        raise ValueError(f"spectra caches {base_spectra} and {ft_spectra}: no matrix has a finite spectrum on both sides")
    write_table(curve, curve_csv)
    write_table(layers, layers_csv)
