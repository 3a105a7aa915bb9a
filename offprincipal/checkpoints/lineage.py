"""Does a fine-tune descend from its stated base? A cheap check made before any metric.

1. **Same architecture** (an error otherwise): the configs' ``model_type`` agree, and the two
   checkpoints hold the same tensor names with the same shapes (the reader's pairing check,
   tied ``lm_head`` included). Errors name both checkpoints and the first offending tensor.
2. **Descent** (a warning otherwise). One probe matrix per decoder layer -- the smallest of its
   q/k/v/o/gate/up/down matrices (k_proj under GQA), so the check reads ~1% of the model -- is
   compared two ways, each against what two *unrelated* models would give:

   * **bitwise-equal weights.** A descendant keeps many bf16 weights exactly (RL: 36-92% in
     the paper's Table 1, SFT: 0.6-18.8%); unrelated models share only chance coincidences.
     The chance rate is computed from the two matrices' own value distributions,
     ``Σ_c p0(c)·p1(c)`` over bf16 codes ``c`` (``±0`` merged), so it needs no assumed
     distribution. The pair "shares almost no bitwise-equal weights" when the pooled equal
     fraction is at most **2×** that chance rate.
   * **spectrum.** Fine-tuning, SFT included, keeps each matrix's top singular subspaces
     (the paper's Figs. 1c, 4: rotations of degrees, not of 90°); an unrelated model's top-k
     subspace is as aligned with the base's as a random one. Per layer, the overlap
     ``ρ = ½(‖U0ᵀU1‖²_F + ‖V0ᵀV1‖²_F)/k`` (the mean squared cosine of the principal angles,
     ``k = min(16, rank/4)``) is 1 for identical subspaces and ``ρ0 = ½(k/m + k/n)`` on
     average for random ones. The layer's spectrum "differs" when ``ρ`` lies closer to
     random than to identical, ``ρ < (1 + ρ0)/2``. NSS is recorded beside it.

   Only when **both** hold -- almost no equal weights, and a different spectrum in **every**
   probed layer -- does the check warn that the fine-tune may not descend from that base.
   Either alone is a known property of real fine-tunes (dense SFT changes nearly every
   weight; a small, ill-conditioned subspace can rotate), so neither alone warns.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from offprincipal.checkpoints.reader import Checkpoint, CheckpointMismatch, pair_names
from offprincipal.io import write_json
from offprincipal.metrics.spectral import spectrum

log = logging.getLogger(__name__)

PROBE_KINDS = ("q", "k", "v", "o", "gate", "up", "down")
EQUAL_CHANCE_FACTOR = 2.0  # "almost no equal weights": at most this many times chance
TOP_K = 16


def architecture_mismatch(base: Checkpoint, ft: Checkpoint) -> str | None:
    b, f = base.config.get("model_type"), ft.config.get("model_type")
    if b and f and b != f:
        return (
            f"checkpoints {base.label!r} (base, {base.path}) and {ft.label!r} (fine-tuned, {ft.path}) are different"
            f" architectures: model_type {b!r} ({base.config.get('architectures')}) vs {f!r}"
            f" ({ft.config.get('architectures')})"
        )
    return None


def _codes(w: torch.Tensor) -> np.ndarray:
    from offprincipal.metrics.sparsity import round_to_bf16

    c = round_to_bf16(w).reshape(-1).view(torch.int16).numpy().view(np.uint16).copy()
    c[c == 0x8000] = 0  # -0 is +0
    return c


def _top_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    return float(np.sum((a[:, :k].T @ b[:, :k]) ** 2) / k)


def probe_layer(w0: torch.Tensor, w1: torch.Tensor) -> dict:
    """Equal weights vs chance, and top-k subspace overlap vs random, for one matrix pair."""
    c0, c1 = _codes(w0), _codes(w1)
    n = c0.size
    h0 = np.bincount(c0, minlength=1 << 16).astype(np.float64)
    h1 = np.bincount(c1, minlength=1 << 16).astype(np.float64)
    finite = np.ones(1 << 16, bool)
    finite[np.arange(1 << 16) & 0x7F80 == 0x7F80] = False  # coincidences of inf/NaN prove nothing
    equal = int(np.sum((c0 == c1) & finite[c0]))
    chance = float(np.sum(h0[finite] * h1[finite]) / n**2)
    row = {"numel": n, "equal": equal, "equal_fraction": equal / n, "chance_fraction": chance}
    x0 = w0.to(torch.bfloat16).double()
    x1 = w1.to(torch.bfloat16).double()
    if not (bool(torch.isfinite(x0).all()) and bool(torch.isfinite(x1).all())):
        return {**row, "subspace_overlap": float("nan"), "chance_overlap": float("nan"), "nss": float("nan"), "differs": None}
    m, k_cols = x0.shape
    k = max(1, min(TOP_K, min(m, k_cols) // 4))
    # the pipeline's exact SVD, which forms only the k singular vectors the overlap needs
    sp0, sp1 = spectrum(x0, k), spectrum(x1, k)
    u0, s0, v0 = sp0.U.numpy(), sp0.S.numpy(), sp0.V.numpy()
    u1, s1, v1 = sp1.U.numpy(), sp1.S.numpy(), sp1.V.numpy()
    rho = 0.5 * (_top_overlap(u0, u1, k) + _top_overlap(v0, v1, k))
    rho0 = 0.5 * (k / m + k / k_cols)
    return {
        **row,
        "k": k,
        "subspace_overlap": rho,
        "chance_overlap": rho0,
        "nss": float(np.linalg.norm(s1 - s0) / np.linalg.norm(s0)) if np.linalg.norm(s0) else float("nan"),
        "differs": bool(rho < (1.0 + rho0) / 2.0),
    }


def probe_names(base: Checkpoint, plan: list[tuple[str, str, str]]) -> list[tuple[int, str, str, str]]:
    """(layer, logical, base-side, ft-side) of the smallest probe-kind matrix of each layer."""
    best: dict[int, tuple[int, str, str, str]] = {}
    for logical, bn, fn in plan:
        info = base.info(bn)
        shape = base.shape(bn)
        if info.layer is None or info.kind not in PROBE_KINDS or len(shape) != 2:
            continue
        size = shape[0] * shape[1]
        if info.layer not in best or size < best[info.layer][0]:
            best[info.layer] = (size, logical, bn, fn)
    return [(layer, *best[layer][1:]) for layer in sorted(best)]


def check_lineage(base: Checkpoint, ft: Checkpoint) -> dict:
    """The architecture check (raises :class:`CheckpointMismatch`) and the descent check
    (returns a record whose ``warning`` is None or a sentence naming both checkpoints)."""
    problem = architecture_mismatch(base, ft)
    if problem:
        raise CheckpointMismatch(problem)
    plan = pair_names(base, ft)
    layers = []
    for layer, logical, bn, fn in probe_names(base, plan):
        row = probe_layer(base.load(bn), ft.load(fn))
        layers.append({"layer": layer, "tensor": logical, **row})
    record = {
        "base": {"name": base.label, "path": str(base.path), "model_type": base.config.get("model_type")},
        "finetuned": {"name": ft.label, "path": str(ft.path), "model_type": ft.config.get("model_type")},
        "tensors": len(plan),
        "layers": layers,
        "thresholds": {
            "equal_fraction_at_most_chance_times": EQUAL_CHANCE_FACTOR,
            "layer_differs_if_subspace_overlap_below": "(1 + chance_overlap) / 2",
            "top_k": TOP_K,
        },
        "warning": None,
    }
    if not layers:
        record["note"] = "no decoder-layer matrices to probe; descent not checked"
        return record
    n = sum(r["numel"] for r in layers)
    equal = sum(r["equal"] for r in layers) / n
    chance = sum(r["chance_fraction"] * r["numel"] for r in layers) / n
    differing = [r["layer"] for r in layers if r["differs"]]
    checked = [r["layer"] for r in layers if r["differs"] is not None]
    record.update(
        equal_fraction=equal,
        chance_fraction=chance,
        shares_almost_no_weights=bool(equal <= EQUAL_CHANCE_FACTOR * chance),
        layers_checked=len(checked),
        layers_with_different_spectrum=len(differing),
    )
    if record["shares_almost_no_weights"] and checked and len(differing) == len(checked):
        record["warning"] = (
            f"checkpoint {ft.label!r} ({ft.path}) may not descend from its stated base {base.label!r}"
            f" ({base.path}): only {100 * equal:.3g}% of the probed weights are bitwise equal to the base's"
            f" ({100 * chance:.3g}% would coincide between unrelated models with these value distributions),"
            f" and in all {len(checked)} layers checked the top singular subspaces are closer to random"
            " than to the base's. The metrics then compare two unrelated models."
        )
    return record


def lineage_report(base_manifest: str | os.PathLike, ft_manifest: str | os.PathLike, out_json: str | os.PathLike) -> dict:
    """Run :func:`check_lineage` on a pair's manifests, log any warning, write the record."""
    from offprincipal.analysis import open_checkpoint

    with open_checkpoint(base_manifest) as base, open_checkpoint(ft_manifest) as ft:
        record = check_lineage(base, ft)
    if record["warning"]:
        log.warning("%s", record["warning"])
    write_json(out_json, record)
    return record
