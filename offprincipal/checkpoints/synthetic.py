"""Small synthetic checkpoint pairs the pipeline builds itself (the default config).

SYNTHETIC STAND-INS, NOT TRAINED MODELS. Nothing here trains anything. The base is a tiny
Qwen3 (real Hugging Face layout, bf16 safetensors, loadable with
``AutoModelForCausalLM.from_pretrained``) whose projection matrices are given planted
principal structure; the "fine-tuned" variants are that base plus planted perturbations
that mimic the weight-space signatures reported in arXiv 2511.08567:

* ``kind="dense"`` (SFT stand-in): every projection gets a rescaling of its top-k principal
  part plus dense Gaussian noise, embeddings get dense noise and norms a small jitter, so
  almost every bf16 entry changes, the spectrum shifts (NSS ~1e-1) and the top-k singular
  subspaces rotate.
* ``kind="offprincipal"`` (RL stand-in): every 2-D matrix gets
  ``ΔW = scale · step_fraction · ε · P⊥_U G P⊥_V``, an update with the top-``rank_k``
  singular subspaces of the base projected out on both sides. ``G`` mixes a footprint shared
  by all runs with the same ``shared_seed`` and a run-specific part, and is weighted toward
  low-|W| entries. ``ε`` is set relative to the bf16 ULP of each entry so that, after
  rounding ``W + ΔW`` to bf16, about ``TARGET_CHANGED_FRACTION`` of the entries change at
  ``scale = step_fraction = 1`` (the bf16 realization filter: a larger weight needs a larger
  step to register). Intermediate checkpoints of one run use the same seeds and a smaller
  ``step_fraction``; their changed sets are nested. Norm weights are left unchanged.

Every output is a deterministic function of the seeds and sizes (same arguments →
bitwise-identical ``model.safetensors``) and is written atomically. Each output directory
carries ``offprincipal_synthetic.json`` describing the recipe.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from offprincipal.io import atomic_dir, write_json

MANIFEST_NAME = "offprincipal_synthetic.json"
WEIGHTS_NAME = "model.safetensors"
SYNTHETIC_NOTE = "synthetic: not a trained model (planted structure for pipeline testing)"

#: the projections whose weights get planted principal structure
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: typical entry std of an LLM projection matrix
TARGET_STD = 0.02
#: changed-entry fraction the off-principal variant is calibrated to at scale=step_fraction=1
TARGET_CHANGED_FRACTION = 0.4
#: offset c in the low-magnitude weighting 1/(|W| + c), relative to std(W)
LOW_MAGNITUDE_OFFSET = 0.25
#: dense variant: relative amplitude of the principal rescaling and of the dense noise
DENSE_PRINCIPAL_AMPLITUDE = 0.3
DENSE_NOISE_RELATIVE_STD = 0.2
DENSE_NORM_JITTER = 0.02

_KINDS = ("dense", "offprincipal")


# ----------------------------------------------------------------------------- helpers


def _generator(*seeds: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (stable across runs)."""
    mixed = 0
    for s in seeds:
        mixed = (mixed * 1_000_003 + int(s) + 0x9E3779B9) % (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(mixed)


def _name_seed(name: str) -> int:
    """A stable integer from a tensor name (Python's hash() is salted per process)."""
    h = 1469598103934665603
    for ch in name.encode():
        h = ((h ^ ch) * 1099511628211) % (2**61 - 1)
    return h


def _haar(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """``rows × cols`` matrix with Haar-distributed orthonormal columns (fp64)."""
    g = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1.0
    return q * sign


def _planted_matrix(rows: int, cols: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    """W = U diag(σ) Vᵀ with Haar U, V and σ_i = c·i^(−decay), scaled so std(W) ≈ TARGET_STD."""
    r = min(rows, cols)
    u = _haar(rows, r, gen)
    v = _haar(cols, r, gen)
    i = torch.arange(1, r + 1, dtype=torch.float64)
    shape = i.pow(-decay)
    # ||W||_F² = Σσ² should equal rows·cols·TARGET_STD²
    c = TARGET_STD * math.sqrt(rows * cols / float(shape.pow(2).sum()))
    return (u * (c * shape)) @ v.T


def _is_projection(name: str) -> bool:
    return name.endswith(".weight") and any(f".{p}." in name for p in PROJECTIONS)


def _is_norm(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and "norm" in parts[-2]


def _top_k(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    k = max(0, min(k, s.numel()))
    return u[:, :k], s[:k], vh[:k].T


def _change_thresholds(w_bf16: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Per entry, the smallest |step| that moves ``w`` to another bf16 value along ``direction``.

    Half the gap to the neighbouring bf16 value in the direction of the step (round to
    nearest); ``inf`` where the direction is zero.
    """
    toward = torch.where(direction >= 0, torch.tensor(float("inf")), torch.tensor(float("-inf")))
    neighbour = torch.nextafter(w_bf16, toward.to(torch.bfloat16))
    gap = (neighbour.double() - w_bf16.double()).abs() / 2.0
    return torch.where(direction == 0, torch.full_like(gap, float("inf")), gap)


def _save_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    ordered = {k: tensors[k].contiguous() for k in sorted(tensors)}
    save_file(ordered, str(path), metadata={"format": "pt"})


def _write_manifest(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- base


def build_base(
    out_dir,
    *,
    seed: int,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 256,
    spectrum_decay: float = 0.7,
) -> None:
    """Write a tiny synthetic Qwen3 base (bf16, HF layout) with planted principal structure.

    SYNTHETIC: not a trained model. Every q/k/v/o/gate/up/down projection is
    ``U diag(σ) Vᵀ`` with Haar-random ``U``, ``V`` and ``σ_i ∝ i^(−spectrum_decay)``,
    scaled to entry std ≈ 0.02. Embeddings and norms keep the transformers init.
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if hidden_size % num_heads:
        raise ValueError("hidden_size must be divisible by num_heads")
    if num_heads % num_kv_heads or num_kv_heads >= num_heads:
        raise ValueError("need GQA: num_kv_heads < num_heads and num_heads % num_kv_heads == 0")
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)  # transformers' own init (embeddings) uses the global RNG
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and _is_projection(name):
                gen = _generator(seed, _name_seed(name))
                param.copy_(_planted_matrix(*param.shape, spectrum_decay, gen).to(param.dtype))
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16

    recipe = {
        "synthetic": True,
        "note": SYNTHETIC_NOTE,
        "kind": "base",
        "architecture": "Qwen3ForCausalLM",
        "seed": seed,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "spectrum_decay": spectrum_decay,
        "target_entry_std": TARGET_STD,
        "dtype": "bfloat16",
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        _write_manifest(tmp / MANIFEST_NAME, recipe)


# ----------------------------------------------------------------------------- variants


def _dense_update(name: str, w: torch.Tensor, *, seed: int, scale: float, rank_k: int) -> torch.Tensor:
    """SFT stand-in for one tensor; returns the new fp64 values."""
    gen = _generator(seed, _name_seed(name), 1)
    if w.ndim == 1:
        if _is_norm(name):
            jitter = torch.randn(w.shape, generator=gen, dtype=torch.float64)
            return w * (1.0 + scale * DENSE_NORM_JITTER * jitter)
        return w
    noise = torch.randn(w.shape, generator=gen, dtype=torch.float64) * (
        DENSE_NOISE_RELATIVE_STD * float(w.std())
    )
    delta = noise
    if _is_projection(name):
        u, s, v = _top_k(w, rank_k)
        signs = torch.where(torch.rand(s.shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
        delta = delta + (u * (signs * DENSE_PRINCIPAL_AMPLITUDE * s)) @ v.T
    return w + scale * delta


def _offprincipal_direction(
    name: str, w: torch.Tensor, *, seed: int, shared_seed: int, shared_fraction: float, rank_k: int
) -> torch.Tensor:
    """Unit-ε update direction P⊥_U G P⊥_V for one 2-D matrix (fp64)."""
    f = float(shared_fraction)
    g_shared = torch.randn(w.shape, generator=_generator(shared_seed, _name_seed(name), 2), dtype=torch.float64)
    g_run = torch.randn(w.shape, generator=_generator(seed, _name_seed(name), 3), dtype=torch.float64)
    g = math.sqrt(f) * g_shared + math.sqrt(1.0 - f) * g_run
    g = g / (w.abs() + LOW_MAGNITUDE_OFFSET * float(w.std()))
    u, _, v = _top_k(w, rank_k)
    g = g - u @ (u.T @ g)
    g = g - (g @ v) @ v.T
    return g


def build_variant(
    base_dir,
    out_dir,
    *,
    kind: str,
    seed: int,
    scale: float,
    shared_seed: int = 0,
    shared_fraction: float = 0.6,
    rank_k: int = 8,
    step_fraction: float = 1.0,
) -> None:
    """Write a synthetic "fine-tuned" variant of a base built by :func:`build_base`.

    SYNTHETIC: not a trained model. ``kind="dense"`` is the SFT stand-in,
    ``kind="offprincipal"`` the RL stand-in (see the module docstring). ``scale`` multiplies
    the perturbation (for ``offprincipal``, 1.0 ≈ ``TARGET_CHANGED_FRACTION`` of entries
    change); ``shared_seed``/``shared_fraction`` set the footprint shared across RL runs;
    ``rank_k`` the principal subspace dimension avoided (offprincipal) or rescaled (dense);
    ``step_fraction`` ∈ (0, 1] emulates an intermediate checkpoint of the same run.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if not 0.0 < step_fraction <= 1.0:
        raise ValueError("step_fraction must be in (0, 1]")
    if not 0.0 <= shared_fraction <= 1.0:
        raise ValueError("shared_fraction must be in [0, 1]")
    base_dir = Path(base_dir)
    tensors = load_file(str(base_dir / WEIGHTS_NAME))

    out: dict[str, torch.Tensor] = {}
    for name in sorted(tensors):
        t = tensors[name]
        if not t.is_floating_point():
            out[name] = t
            continue
        w = t.double()
        if kind == "dense":
            new = _dense_update(name, w, seed=seed, scale=scale, rank_k=rank_k)
            out[name] = new.to(torch.float32).to(t.dtype)
        else:
            if t.ndim != 2:  # norms (and any other vectors) unchanged
                out[name] = t
                continue
            d = _offprincipal_direction(
                name, w, seed=seed, shared_seed=shared_seed, shared_fraction=shared_fraction, rank_k=rank_k
            )
            thresholds = _change_thresholds(t, d) / d.abs()
            ranked = torch.sort(thresholds.flatten()).values
            eps = float(ranked[min(ranked.numel() - 1, int(TARGET_CHANGED_FRACTION * ranked.numel()))])
            delta = (scale * step_fraction * eps) * d
            out[name] = (t.float() + delta.float()).to(t.dtype)

    base_recipe = {}
    manifest_path = base_dir / MANIFEST_NAME
    if manifest_path.exists():
        base_recipe = json.loads(manifest_path.read_text())
    recipe = {
        "synthetic": True,
        "note": SYNTHETIC_NOTE,
        "kind": kind,
        "stands_in_for": "SFT" if kind == "dense" else "RLVR",
        "seed": seed,
        "scale": scale,
        "shared_seed": shared_seed,
        "shared_fraction": shared_fraction,
        "rank_k": rank_k,
        "step_fraction": step_fraction,
        "target_changed_fraction": TARGET_CHANGED_FRACTION if kind == "offprincipal" else None,
        "base": base_recipe,
        "dtype": "bfloat16",
    }
    with atomic_dir(out_dir) as tmp:
        for p in sorted(base_dir.iterdir()):
            if p.is_file() and p.name not in (WEIGHTS_NAME, MANIFEST_NAME) and not p.name.startswith("."):
                shutil.copyfile(p, tmp / p.name)
        _save_weights(out, tmp / WEIGHTS_NAME)
        _write_manifest(tmp / MANIFEST_NAME, recipe)


_BASE_KEYS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size")
_VARIANT_KEYS = ("scale", "shared_seed", "shared_fraction", "rank_k", "step_fraction")


def build_from_spec(
    name: str,
    spec: dict,
    *,
    out_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    parent_manifest: str | os.PathLike | None = None,
) -> dict:
    """Build the synthetic checkpoint a config entry describes, then write its pipeline
    manifest (the same shape as a Hub download's, with ``source: synthetic``)."""
    recipe = spec["recipe"]
    if recipe == "base":
        build_base(out_dir, seed=spec["seed"], **{k: spec[k] for k in _BASE_KEYS if k in spec})
    else:
        if parent_manifest is None:
            raise ValueError(f"synthetic checkpoint {name!r}: recipe {recipe!r} needs its base's manifest")
        parent = json.loads(Path(parent_manifest).read_text())
        build_variant(parent["path"], out_dir, kind=recipe, seed=spec["seed"], **{k: spec[k] for k in _VARIANT_KEYS if k in spec})
    record = {
        "name": name,
        "source": "synthetic",
        "recipe": recipe,
        "from": spec.get("from"),
        "path": str(Path(out_dir).resolve()),
        "note": SYNTHETIC_NOTE,
    }
    write_json(manifest, record)
    return record
