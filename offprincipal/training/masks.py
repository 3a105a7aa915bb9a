"""Sparse-update masks computed from the base weights, for masked (sparse) fine-tuning.

A mask marks the **trainable** entries of one weight matrix; every entry outside it stays
at its base value (bitwise). Masks are built per matrix for the decoder projections
``q, k, v, o, gate, up, down`` (:func:`is_mask_target`):

=================  ===========================================================================
kind               trainable entries of each matrix ``W0``
=================  ===========================================================================
``principal``      top-α of ``|W0^(k)|``, the rank-k SVD reconstruction (LIFT's principal
                   weights; :func:`offprincipal.metrics.masks.principal_mask`)
``nonprincipal``   the complement of ``principal``
``low``            bottom-α of ``|W0|`` (:func:`offprincipal.metrics.masks.low_magnitude_mask`)
``safe``           ``low ∪ nonprincipal`` (same α for both)
``random``         a seeded uniformly random set with exactly as many entries as that matrix's
                   ``safe`` mask -- per-matrix density matching, which implies the same
                   per-layer (and global) density as ``safe``
=================  ===========================================================================

Every other parameter (embeddings, ``lm_head``, norms, biases) is frozen in a masked run:
the paper's sparse RL updates only the masked projection weights, and freezing the rest
keeps "outside the mask" meaning "unchanged" for the whole checkpoint.

Masks are saved with :func:`offprincipal.metrics.masks.mask_writer` (bit-packed ``.npz``),
keyed by HF parameter name, the format the verl ``MaskedFSDPEngine`` plugin also reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from offprincipal.checkpoints.naming import classify
from offprincipal.metrics.masks import (
    MaskFile,
    low_magnitude_mask,
    mask_writer,
    principal_mask,
)
from offprincipal.metrics.spectral import spectrum

from .spec import MASK_KINDS

#: module kinds (offprincipal.checkpoints.naming) whose weights get masks
MASK_TARGET_KINDS = frozenset(("q", "k", "v", "o", "gate", "up", "down"))


def is_mask_target(name: str, shape: tuple[int, ...] | None = None) -> bool:
    """True for a dense decoder projection weight (q/k/v/o/gate/up/down ``.weight``)."""
    if not name.endswith(".weight"):
        return False
    info = classify(name)
    if info.kind not in MASK_TARGET_KINDS or info.layer is None:
        return False
    return shape is None or len(shape) == 2


def _name_seed(name: str) -> int:
    """A stable integer from a tensor name (``hash()`` is salted per process)."""
    h = 1469598103934665603
    for ch in name.encode():
        h = ((h ^ ch) * 1099511628211) % (2**61 - 1)
    return h


def random_mask_like(reference: torch.Tensor, *, seed: int, name: str) -> torch.Tensor:
    """Exactly ``reference.sum()`` entries chosen uniformly at random (seeded by ``seed``
    and the tensor name, so masks do not depend on iteration order)."""
    n_true = int(reference.sum())
    gen = torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + _name_seed(name)) % (2**63 - 1))
    perm = torch.randperm(reference.numel(), generator=gen)
    flat = torch.zeros(reference.numel(), dtype=torch.bool)
    flat[perm[:n_true]] = True
    return flat.reshape(reference.shape)


def matrix_mask(
    kind: str, w0: torch.Tensor, *, alpha: float, rank_k: int, seed: int = 0, name: str = ""
) -> torch.Tensor:
    """The trainable-entry mask of one base matrix ``w0`` (bool, CPU, same shape)."""
    if kind not in MASK_KINDS or kind == "none":
        raise ValueError(f"mask kind must be one of {MASK_KINDS[1:]}, got {kind!r}")
    if w0.ndim != 2:
        raise ValueError(f"{name or 'tensor'}: masks need a 2-D matrix, got shape {tuple(w0.shape)}")
    w = w0.detach().to("cpu")

    def principal() -> torch.Tensor:
        sp = spectrum(w, rank_k)  # exact fp64 SVD
        return principal_mask(sp.U, sp.S, sp.V, k=rank_k, alpha=alpha)

    if kind == "principal":
        return principal()
    if kind == "nonprincipal":
        return ~principal()
    if kind == "low":
        return low_magnitude_mask(w, alpha=alpha)
    safe = low_magnitude_mask(w, alpha=alpha) | ~principal()
    if kind == "safe":
        return safe
    return random_mask_like(safe, seed=seed, name=name)


def build_masks(
    kind: str,
    weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    *,
    alpha: float,
    rank_k: int,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Masks for every mask target among ``weights`` (name → base tensor)."""
    items = weights.items() if isinstance(weights, Mapping) else weights
    out: dict[str, torch.Tensor] = {}
    for name, w in items:
        if is_mask_target(name, tuple(w.shape)):
            out[name] = matrix_mask(kind, w, alpha=alpha, rank_k=rank_k, seed=seed, name=name)
    if not out:
        raise ValueError("no q/k/v/o/gate/up/down projection weights found to mask")
    return out


def masks_from_checkpoint(
    path: str | os.PathLike, kind: str, *, alpha: float, rank_k: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Masks computed from an HF-layout checkpoint directory, one tensor at a time."""
    from offprincipal.checkpoints.reader import Checkpoint

    with Checkpoint(path) as ckpt:
        names = [n for n in ckpt.names() if is_mask_target(n, ckpt.shape(n))]
        return build_masks(kind, ((n, ckpt.load(n)) for n in names), alpha=alpha, rank_k=rank_k, seed=seed)


def masks_for_spec(spec, weights) -> dict[str, torch.Tensor]:
    """Masks for a :class:`~offprincipal.training.spec.RunSpec` (``spec.mask != "none"``)."""
    return build_masks(spec.mask, weights, alpha=spec.mask_alpha, rank_k=spec.mask_rank_k, seed=spec.mask_seed)


def save_masks(path: str | os.PathLike, masks: Mapping[str, torch.Tensor]) -> None:
    """Write masks atomically as a bit-packed ``.npz`` (:class:`~offprincipal.metrics.masks.MaskFile`)."""
    with mask_writer(path) as writer:
        for name in masks:
            writer.add(name, masks[name])


def load_masks(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    with MaskFile(Path(path)) as mf:
        return {name: torch.from_numpy(np.ascontiguousarray(mf.mask(name))) for name in mf.names}


def mask_densities(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Trainable fraction per matrix."""
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}


def layer_densities(masks: Mapping[str, torch.Tensor]) -> dict[int, float]:
    """Trainable fraction per decoder layer (over its masked matrices)."""
    num: dict[int, int] = {}
    den: dict[int, int] = {}
    for name, m in masks.items():
        layer = classify(name).layer
        num[layer] = num.get(layer, 0) + int(m.sum())
        den[layer] = den.get(layer, 0) + m.numel()
    return {layer: num[layer] / den[layer] for layer in sorted(num)}
