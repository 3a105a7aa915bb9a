"""UV restoration (Jin et al., arXiv 2508.16546): put the base's singular directions back
into a fine-tuned checkpoint while keeping the fine-tune's singular values.

For each chosen 2-D matrix, full SVDs in fp64 of the base ``W_b = U_b S_b V_bᵀ`` and the
fine-tune ``W_f = U_f S_f V_fᵀ`` (singular values descending); with ``r = ceil(p·min(m, n))``

    W' = U_b[:, :r] diag(S_f[:r]) V_b[:, :r]ᵀ + U_f[:, r:] diag(S_f[r:]) V_f[:, r:]ᵀ

computed in fp64 and cast to bf16 (fp64 → fp32 → bf16, round-to-nearest-even at each step).
``p = 0`` copies the fine-tune's tensor bitwise (no re-forming); ``p = 1`` gives
``U_b S_f V_bᵀ``. A singular pair is defined up to a joint sign flip (u_i, v_i) → (−u_i, −v_i);
each term ``u_i s_i v_iᵀ`` is invariant to it, and each side's u_i is always paired with the
same side's v_i, so the sign LAPACK picks is harmless. For 0 < p < 1, W' is not itself in SVD
form (the base's top directions need not be orthogonal to the fine-tune's lower ones), so the SVD
of W' keeps the base's directions cleanly only well above index r; near r the two parts mix.

Layer-group mode restores every index (p = 1) of the matrices in the first, middle or last
quarter of the decoder layers (layer numbers from ``offprincipal.checkpoints.naming``);
quarter boundaries are ``ceil(L/4)`` layers: first = [0, q), last = [L−q, L), middle = the q
layers centred in the stack. Only the decoder layers' 2-D matrices are restored (attention and
MLP projections, experts, routers); embeddings, ``lm_head``, norms, biases and unchosen matrices
are copied bitwise -- so a fine-tune that unties ``lm_head`` from a tied base (DeepSeek-R1-
Distill-Qwen-1.5B from Qwen2.5-Math-1.5B) can be restored, its ``lm_head`` kept.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from offprincipal.checkpoints.naming import classify
from offprincipal.checkpoints.reader import INDEX_NAME
from offprincipal.device import pick_device
from offprincipal.io import atomic_dir, write_json
from offprincipal.metrics.spectral import thin_svd

RECORD_NAME = "restoration.json"
GROUPS = ("first", "middle", "last")
_SKIP_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".safetensors")


def restore_matrix(w_base: torch.Tensor, w_ft: torch.Tensor, p: float) -> torch.Tensor:
    """``W'`` above, in fp64 (the caller casts). ``p`` in [0, 1]."""
    if w_base.shape != w_ft.shape or w_base.ndim != 2:
        raise ValueError(f"restore_matrix needs two 2-D matrices of one shape, got {tuple(w_base.shape)} and {tuple(w_ft.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {p}")
    ub, _, vbh = thin_svd(w_base.double())
    uf, sf, vfh = thin_svd(w_ft.double())
    r = math.ceil(p * min(w_ft.shape))
    return (ub[:, :r] * sf[:r]) @ vbh[:r] + (uf[:, r:] * sf[r:]) @ vfh[r:]


def group_layers(group: str, num_layers: int) -> range:
    """Layer indices of the ``first``/``middle``/``last`` quarter of ``num_layers`` layers."""
    q = math.ceil(num_layers / 4)
    if group == "first":
        return range(0, q)
    if group == "last":
        return range(num_layers - q, num_layers)
    if group == "middle":
        start = (num_layers - q) // 2
        return range(start, start + q)
    raise ValueError(f"layer group must be one of {GROUPS}, got {group!r}")


def _shard_files(d: Path) -> list[str]:
    import json

    idx = d / INDEX_NAME
    if idx.is_file():
        return sorted(set(json.loads(idx.read_text())["weight_map"].values()))
    return sorted(p.name for p in d.glob("*.safetensors") if p.is_file())


def _tensor_files(d: Path) -> dict[str, str]:
    where = {}
    for fname in _shard_files(d):
        with safe_open(str(d / fname), framework="pt", device="cpu") as fh:
            where.update({k: fname for k in fh.keys()})
    if not where:
        raise FileNotFoundError(f"no safetensors weights in checkpoint {d}")
    return where


def restore_checkpoint(
    base_dir: str | os.PathLike,
    finetuned_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    top_p: float | None = None,
    layers: str | None = None,
    device: str = "cpu",
) -> dict:
    """Write the restored checkpoint to ``out_dir`` atomically: the fine-tune's shard layout,
    with restored matrices in bf16, every other tensor bitwise, the fine-tune's other
    top-level files (config, tokenizer, ...) copied, and ``restoration.json``. Exactly one of
    ``top_p`` (all matrices, top fraction of indices) or ``layers`` (a group, all indices)."""
    if (top_p is None) == (layers is None):
        raise ValueError("give exactly one of top_p or layers")
    base, ft, out = Path(base_dir), Path(finetuned_dir), Path(out_dir)
    base_where = _tensor_files(base)
    ft_where = _tensor_files(ft)
    infos = {k: classify(k) for k in ft_where}
    layer_ids = sorted({i.layer for i in infos.values() if i.layer is not None})
    if layers is not None:
        if not layer_ids:
            raise ValueError(f"checkpoint {ft} has no decoder layers to group")
        chosen_layers = set(group_layers(layers, max(layer_ids) + 1))
        p = 1.0
    else:
        chosen_layers, p = None, float(top_p)

    def chosen(key: str, t: torch.Tensor) -> bool:
        info = infos[key]
        if not info.is_matrix or info.layer is None or t.ndim != 2 or p == 0.0:
            return False
        return chosen_layers is None or info.layer in chosen_layers

    dev = pick_device(device)
    restored: list[str] = []
    with atomic_dir(out) as tmp:
        for fname in _shard_files(ft):
            tensors: dict[str, torch.Tensor] = {}
            with safe_open(str(ft / fname), framework="pt", device="cpu") as fh:
                meta = fh.metadata() or {"format": "pt"}
                for key in fh.keys():
                    t = fh.get_tensor(key)
                    if chosen(key, t):
                        if key not in base_where:
                            raise KeyError(f"tensor {key} of fine-tune {ft} is missing from base {base}")
                        with safe_open(str(base / base_where[key]), framework="pt", device="cpu") as bh:
                            wb = bh.get_tensor(key)
                        t = restore_matrix(wb.to(dev), t.to(dev), p).float().to(torch.bfloat16).cpu()
                        restored.append(key)
                    tensors[key] = t.contiguous()
            save_file(tensors, str(tmp / fname), metadata=meta)
            del tensors
        for f in sorted(ft.iterdir()):
            if f.name in ft_where.values() or f.name.startswith(".") or f.is_dir() or f.name.endswith(_SKIP_SUFFIXES):
                continue
            shutil.copy2(f, tmp / f.name)
        rec = {
            "base": str(base),
            "finetuned": str(ft),
            "mode": "layers" if layers is not None else "top_p",
            "top_p": p,
            "layers": layers,
            "layer_ids": sorted(chosen_layers) if chosen_layers is not None else None,
            "formula": "W' = U_b[:, :r] diag(S_f[:r]) V_b[:, :r]^T + U_f[:, r:] diag(S_f[r:]) V_f[:, r:]^T,"
            " r = ceil(p*min(m,n)), fp64 SVD, cast fp64->fp32->bf16",
            "restored": restored,
        }
        write_json(tmp / RECORD_NAME, rec)
    return rec


def build_restored(name: str, base_manifest, ft_manifest, out_dir, manifest, *, top_p: float | None = None,
                   layers: str | None = None, device: str = "cpu") -> dict:
    """The workflow's restored checkpoint ``name``: restore the fine-tune a manifest names
    towards the base another names, into ``out_dir``, and write its manifest (the recipe and
    both parents) atomically after the checkpoint."""
    import json

    parents = {}
    for side, path in (("base", base_manifest), ("finetuned", ft_manifest)):
        m = json.loads(Path(path).read_text())
        if not m.get("path"):
            raise ValueError(f"restored checkpoint '{name}': {side} manifest {path} names no local 'path'")
        parents[side] = m
    rec = restore_checkpoint(parents["base"]["path"], parents["finetuned"]["path"], out_dir, top_p=top_p, layers=layers,
                             device=device)
    out = {
        "name": name,
        "source": "restored",
        "base": parents["base"].get("name", Path(base_manifest).stem),
        "finetuned": parents["finetuned"].get("name", Path(ft_manifest).stem),
        "path": str(Path(out_dir).resolve()),
        "restoration_record": str(Path(out_dir).resolve() / RECORD_NAME),
        "recipe": {"mode": rec["mode"], "top_p": rec["top_p"], "layers": rec["layers"], "layer_ids": rec["layer_ids"]},
        "formula": rec["formula"],
        "restored_tensors": len(rec["restored"]),
    }
    write_json(manifest, out)
    return out
