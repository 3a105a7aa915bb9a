"""Function-preserving interventions on a pretrained base (paper App. D, Sec. 4.3).

ROTATE and PERMUTE rewrite the attention weights of chosen decoder layers so that the
network computes the same function while the *coordinates* of its weight matrices are
scrambled. RL started from the intervened base should then update entries whose positions
no longer line up with the base's principal / low-magnitude structure, so the update-mask
overlap on intervened layers falls to the random level.

Conventions (Hugging Face ``nn.Linear`` storage, ``y = x Wᵀ + b``)
--------------------------------------------------------------------
``n_q`` query heads, ``n_kv`` KV heads, ``r = n_q / n_kv`` query heads per KV group
(query head ``h`` reads KV head ``h // r``), ``d = head_dim``. Row block ``g`` of
``v_proj.weight`` (``[n_kv·d, H]``) is KV head ``g``; column block ``h`` of
``o_proj.weight`` (``[H, n_q·d]``) is query head ``h``.

PERMUTE (applied first)
    ``kv_perm`` is a permutation of the KV heads and ``q_perm`` one of the query heads with
    ``q_perm[j·r + s] = kv_perm[j]·r + ρ_j[s]`` (``ρ_j`` = identity unless
    ``permute_within_groups``). New head ``i`` is old head ``perm[i]``:

    * ``k_proj``/``v_proj`` rows (and biases): new block ``j`` ← old block ``kv_perm[j]``;
    * ``q_proj`` rows (and bias): new block ``i`` ← old block ``q_perm[i]``;
    * ``o_proj`` columns: new block ``i`` ← old block ``q_perm[i]``.

    RoPE acts identically on every head and Qwen3's ``q_norm``/``k_norm`` weights
    (shape ``[d]``) are shared by all heads, so both commute with head permutations. A
    permutation is drawn uniformly among the *non-identity* permutations whenever more
    than one exists (with 2 KV heads -- DS-R1-Distill-Qwen-1.5B -- a uniform draw would be
    the identity half the time).

ROTATE (applied after PERMUTE; ``R_g`` indexes the *new* KV head ``g``)
    One Haar-random ``R_g ∈ O(d)`` per KV head (fp64 QR of a Gaussian, sign-fixed by
    ``diag(R)``):

    * ``v_proj.weight[g] ← R_gᵀ · v_proj.weight[g]`` and ``v_proj.bias[g] ← R_gᵀ b_v[g]``
      (the values of head ``g`` become ``R_gᵀ v``);
    * ``o_proj.weight[:, h] ← o_proj.weight[:, h] · R_{h // r}`` for EVERY query head ``h``
      of group ``g`` (GQA), so ``W_o' a' = W_o R_g R_gᵀ a = W_o a``.

    In the paper's ``x @ W`` notation (``W_v ∈ ℝ^{H × n_kv d}``) this is
    ``W_v' = W_v R_kv`` and ``W_o' = R_qᵀ W_o`` with block-diagonal ``R_kv = ⊕_g R_g``,
    ``R_q = ⊕_h R_{h // r}``; in HF storage it is ``v_proj' = R_kvᵀ v_proj`` and
    ``o_proj' = o_proj R_q``. Q and K are never rotated (RoPE commutes only with
    per-frequency 2×2 rotations and Qwen3's per-channel ``q_norm``/``k_norm`` with none).

Each transformed tensor is computed in fp64 from the stored values and cast back to the
stored dtype (fp64 → fp32 → stored), so in bf16 the function is only approximately
preserved; pure permutations are exact copies in every dtype. Everything else is copied
bit for bit, shard by shard, keeping the base's shard layout and index.

Record
------
:func:`apply_interventions` writes ``intervention.json`` into the output directory (and,
if asked, to a second path): the head geometry, and per layer the seeds, ``kv_perm`` /
``q_perm`` index lists and the rotation seed plus a SHA-256 fingerprint of the fp64
rotation matrices (:func:`rotation_matrices` regenerates and checks them).
:func:`map_mask_back` maps a mask computed on the intervened model's coordinates back
to the base's; rotated tensors have no elementwise correspondence (:func:`is_rotated`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from offprincipal.checkpoints.naming import classify
from offprincipal.checkpoints.reader import INDEX_NAME, Checkpoint, CheckpointError
from offprincipal.io import atomic_dir, write_json

__all__ = [
    "RECORD_NAME",
    "RECORD_FORMAT",
    "Intervention",
    "HeadGeometry",
    "apply_interventions",
    "load_record",
    "map_mask_back",
    "map_mask_forward",
    "is_rotated",
    "is_permuted",
    "rotation_matrices",
    "haar_orthogonal",
]

RECORD_NAME = "intervention.json"
RECORD_FORMAT = "offprincipal.interventions/1"

#: weight formats never copied into the intervened directory (they would be stale)
_SKIP_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".safetensors")

MaskT = TypeVar("MaskT", np.ndarray, torch.Tensor)


# ----------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class Intervention:
    """What to do to one decoder layer. ``seed`` drives both the permutation and the
    rotations (through separate derived streams)."""

    layer: int
    rotate: bool = False
    permute: bool = False
    seed: int = 0
    permute_within_groups: bool = False

    def __post_init__(self):
        if int(self.layer) < 0:
            raise ValueError(f"intervention layer must be >= 0, got {self.layer}")
        if not (self.rotate or self.permute):
            raise ValueError(f"intervention on layer {self.layer} neither rotates nor permutes")
        if self.permute_within_groups and not self.permute:
            raise ValueError(f"layer {self.layer}: permute_within_groups needs permute=True")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Intervention:
        known = {"layer", "rotate", "permute", "seed", "permute_within_groups"}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown intervention field(s) {sorted(extra)}; known: {sorted(known)}")
        return cls(
            layer=int(d["layer"]),
            rotate=bool(d.get("rotate", False)),
            permute=bool(d.get("permute", False)),
            seed=int(d.get("seed", 0)),
            permute_within_groups=bool(d.get("permute_within_groups", False)),
        )


@dataclass(frozen=True)
class HeadGeometry:
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> HeadGeometry:
        cfg = config
        if "num_attention_heads" not in cfg and isinstance(cfg.get("text_config"), Mapping):
            cfg = cfg["text_config"]
        try:
            n_q = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            layers = int(cfg["num_hidden_layers"])
        except KeyError as exc:
            raise ValueError(f"config.json lacks {exc.args[0]!r}; cannot infer attention heads") from None
        n_kv = int(cfg.get("num_key_value_heads") or n_q)
        hd = cfg.get("head_dim")
        if hd is None:
            if hidden % n_q:
                raise ValueError(f"hidden_size {hidden} is not divisible by num_attention_heads {n_q}")
            hd = hidden // n_q
        if n_kv <= 0 or n_q % n_kv:
            raise ValueError(f"num_attention_heads {n_q} is not a multiple of num_key_value_heads {n_kv}")
        return cls(layers, hidden, n_q, n_kv, int(hd))


# ----------------------------------------------------------------------------- random draws


def _mix(*parts: int) -> int:
    """A stable 63-bit seed from integers (intervention seed, layer, stream tag)."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


_STREAM_PERM = 1
_STREAM_ROT = 2


def haar_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """An ``n × n`` Haar-random orthogonal matrix (fp64): QR of a Gaussian, with the signs
    of ``diag(R)`` folded into ``Q`` (Mezzadri 2007; SpinQuant's ``random_orthogonal_matrix``)."""
    g = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1.0
    return q * sign


def _nontrivial_perm(n: int, generator: torch.Generator) -> list[int]:
    """Uniform over the non-identity permutations of ``range(n)`` (identity if ``n < 2``)."""
    if n < 2:
        return list(range(n))
    while True:
        p = torch.randperm(n, generator=generator).tolist()
        if p != list(range(n)):
            return p


def _draw_permutation(iv: Intervention, geo: HeadGeometry) -> tuple[list[int], list[int]]:
    gen = torch.Generator(device="cpu").manual_seed(_mix(iv.seed, iv.layer, _STREAM_PERM))
    r = geo.group_size
    kv_perm = _nontrivial_perm(geo.num_key_value_heads, gen)
    q_perm: list[int] = []
    for j in range(geo.num_key_value_heads):
        within = _nontrivial_perm(r, gen) if iv.permute_within_groups else list(range(r))
        q_perm.extend(kv_perm[j] * r + s for s in within)
    if kv_perm == list(range(geo.num_key_value_heads)) and q_perm == list(range(geo.num_attention_heads)):
        raise ValueError(
            f"layer {iv.layer}: PERMUTE is the identity with {geo.num_key_value_heads} KV head(s) and"
            f" {r} query head(s) per group"
            + ("" if iv.permute_within_groups else "; try permute_within_groups=True")
        )
    return kv_perm, q_perm


def _rotations(seed: int, n_kv: int, head_dim: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.stack([haar_orthogonal(head_dim, gen) for _ in range(n_kv)])


def _fingerprint(rot: torch.Tensor) -> str:
    return hashlib.sha256(rot.contiguous().numpy().tobytes()).hexdigest()


# ----------------------------------------------------------------------------- record helpers


def load_record(path_or_dir: str | os.PathLike) -> dict:
    """Read a record from a JSON file or from an intervened checkpoint directory."""
    p = Path(path_or_dir)
    if p.is_dir():
        p = p / RECORD_NAME
    rec = json.loads(p.read_text())
    if rec.get("format") != RECORD_FORMAT:
        raise ValueError(f"{p}: not an intervention record (format {rec.get('format')!r})")
    return rec


def _layer_entry(record: Mapping[str, Any], layer: int | None) -> Mapping[str, Any] | None:
    if layer is None:
        return None
    for e in record.get("layers", []):
        if int(e["layer"]) == int(layer):
            return e
    return None


def _geometry(record: Mapping[str, Any]) -> HeadGeometry:
    return HeadGeometry(**record["geometry"])


def rotation_matrices(record: Mapping[str, Any], layer: int) -> torch.Tensor:
    """The fp64 ``R_g`` of a rotated layer, ``[n_kv, d, d]`` (regenerated from the recorded
    seed and checked against the recorded fingerprint)."""
    e = _layer_entry(record, layer)
    if e is None or not e.get("rotate"):
        raise ValueError(f"layer {layer} was not rotated by this intervention")
    geo = _geometry(record)
    rot = _rotations(int(e["rotation_seed"]), geo.num_key_value_heads, geo.head_dim)
    if _fingerprint(rot) != e["rotation_sha256"]:
        raise ValueError(
            f"layer {layer}: regenerated rotations do not match the recorded fingerprint"
            " (different torch random stream?)"
        )
    return rot


def _attn_role(name: str) -> tuple[int | None, str | None]:
    """(layer, role) with role in q,k,v,o (weights), q_bias,k_bias,v_bias,o_bias, q_norm,k_norm."""
    info = classify(name)
    if info.kind in ("q", "k", "v", "o"):
        return info.layer, info.kind
    if info.kind == "bias" and info.proj in ("q", "k", "v", "o") and ("attn" in name or "attention" in name):
        return info.layer, f"{info.proj}_bias"
    if info.kind == "norm" and info.proj in ("q_norm", "k_norm"):
        return info.layer, info.proj
    return info.layer, None


def is_rotated(tensor_name: str, record: Mapping[str, Any]) -> bool:
    """True for ``v_proj.weight``, ``v_proj.bias`` and ``o_proj.weight`` of a ROTATE'd layer."""
    layer, role = _attn_role(tensor_name)
    e = _layer_entry(record, layer)
    return bool(e and e.get("rotate") and role in ("v", "v_bias", "o"))


def is_permuted(tensor_name: str, record: Mapping[str, Any]) -> bool:
    """True for q/k/v weights and biases and ``o_proj.weight`` of a PERMUTE'd layer."""
    layer, role = _attn_role(tensor_name)
    e = _layer_entry(record, layer)
    return bool(e and e.get("permute") and role in ("q", "k", "v", "o", "q_bias", "k_bias", "v_bias"))


def _expand(perm: Iterable[int], d: int) -> np.ndarray:
    """Head permutation → index permutation of the ``len(perm)·d`` coordinates."""
    p = np.asarray(list(perm), dtype=np.int64)
    return (p[:, None] * d + np.arange(d, dtype=np.int64)[None, :]).reshape(-1)


def _index_plan(role: str, entry: Mapping[str, Any], geo: HeadGeometry) -> tuple[int, np.ndarray]:
    """(axis, idx) such that intervened = base.take(idx, axis) for a permuted tensor."""
    d = geo.head_dim
    if role in ("q", "q_bias"):
        return 0, _expand(entry["q_perm"], d)
    if role in ("k", "v", "k_bias", "v_bias"):
        return 0, _expand(entry["kv_perm"], d)
    if role == "o":
        return 1, _expand(entry["q_perm"], d)
    raise AssertionError(role)


def _expected_len(role: str, geo: HeadGeometry) -> int:
    return (
        geo.num_attention_heads if role in ("q", "q_bias", "o") else geo.num_key_value_heads
    ) * geo.head_dim


def _map(
    mask: MaskT, tensor_name: str, record: Mapping[str, Any], config: Mapping[str, Any] | None, back: bool
) -> MaskT:
    if not isinstance(mask, (np.ndarray, torch.Tensor)):
        raise TypeError(f"mask must be a numpy array or torch tensor, got {type(mask).__name__}")
    if record.get("format") != RECORD_FORMAT:
        raise ValueError("not an intervention record (missing/unknown 'format')")
    geo = _geometry(record)
    if config is not None:
        cg = HeadGeometry.from_config(config)
        if cg != geo:
            raise ValueError(f"config heads {cg} do not match the intervention record {geo}")
    layer, role = _attn_role(tensor_name)
    entry = _layer_entry(record, layer)
    if entry is None or role is None:
        return mask  # untouched tensor: coordinates agree
    if is_rotated(tensor_name, record):
        raise ValueError(
            f"{tensor_name}: layer {layer} was ROTATE'd, so its entries are mixtures of the base's"
            " entries and have no elementwise correspondence with the base; compare this tensor's"
            " mask against the random baseline (or against masks recomputed on the intervened"
            " checkpoint) instead of mapping it back"
        )
    if not entry.get("permute") or role in ("q_norm", "k_norm", "o_bias"):
        return mask
    axis, idx = _index_plan(role, entry, geo)
    if mask.ndim <= axis or mask.shape[axis] != _expected_len(role, geo):
        raise ValueError(
            f"{tensor_name}: mask shape {tuple(mask.shape)} does not fit the recorded head layout"
            f" (axis {axis} should have {_expected_len(role, geo)} entries)"
        )
    if back:  # base[idx] = intervened  →  base = intervened.take(argsort(idx))
        idx = np.argsort(idx)
    if isinstance(mask, torch.Tensor):
        return torch.index_select(mask, axis, torch.as_tensor(idx, device=mask.device))
    return np.take(mask, idx, axis=axis)


def map_mask_back(
    mask: MaskT, tensor_name: str, record: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> MaskT:
    """Map a mask in the intervened checkpoint's coordinates to the base's.

    PERMUTE'd tensors (q/k/v rows and biases, o_proj columns) are un-permuted; tensors the
    intervention left alone (other layers, MLPs, norms, o_proj bias) are returned as is.
    A ROTATE'd tensor (:func:`is_rotated`) raises :class:`ValueError`. ``config`` (the
    checkpoint's config.json), when given, is checked against the record's head layout.
    """
    return _map(mask, tensor_name, record, config, back=True)


def map_mask_forward(
    mask: MaskT, tensor_name: str, record: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> MaskT:
    """Inverse of :func:`map_mask_back`: a base-coordinate mask in intervened coordinates."""
    return _map(mask, tensor_name, record, config, back=False)


# ----------------------------------------------------------------------------- apply


def _check_layer(ckpt: Checkpoint, layer: int, geo: HeadGeometry) -> None:
    names = [n for n in ckpt.names() if classify(n).layer == layer]
    roles: dict[str, str] = {}
    for n in names:
        _, role = _attn_role(n)
        if role is not None:
            if role in roles:
                raise CheckpointError(f"layer {layer}: two tensors play the role {role}: {roles[role]}, {n}")
            roles[role] = n
        elif any(t in n for t in (".self_attn.", ".attention.", ".attn.")) and not n.endswith(
            "rotary_emb.inv_freq"
        ):
            raise CheckpointError(
                f"layer {layer}: attention tensor {n!r} is not one this intervention knows how to"
                " transform (only q/k/v/o projections, their biases and per-head-shared q/k norms)"
            )
    missing = [r for r in ("q", "k", "v", "o") if r not in roles]
    if missing:
        raise CheckpointError(
            f"layer {layer}: no {'/'.join(m + '_proj' for m in missing)} weight in {ckpt.path}"
        )
    h, d, nq, nkv = geo.hidden_size, geo.head_dim, geo.num_attention_heads, geo.num_key_value_heads
    expect = {
        "q": (nq * d, h), "k": (nkv * d, h), "v": (nkv * d, h), "o": (h, nq * d),
        "q_bias": (nq * d,), "k_bias": (nkv * d,), "v_bias": (nkv * d,), "o_bias": (h,),
        "q_norm": (d,), "k_norm": (d,),
    }  # fmt: skip
    for role, n in roles.items():
        if ckpt.shape(n) != expect[role]:
            raise CheckpointError(
                f"layer {layer}: {n} has shape {list(ckpt.shape(n))}, expected {list(expect[role])} for"
                f" {nq} query / {nkv} KV heads of dim {d} (per-head-shared q/k norms only)"
            )


def _transform(
    t: torch.Tensor, role: str, entry: Mapping[str, Any], geo: HeadGeometry, rot: torch.Tensor | None
) -> torch.Tensor:
    out = t
    if entry["permute"] and role in ("q", "k", "v", "o", "q_bias", "k_bias", "v_bias"):
        axis, idx = _index_plan(role, entry, geo)
        out = torch.index_select(out, axis, torch.as_tensor(idx))  # exact copy, stored dtype
    if rot is not None and role in ("v", "v_bias", "o"):
        d, nkv, r = geo.head_dim, geo.num_key_value_heads, geo.group_size
        x = out.to(torch.float64)
        if role == "v":  # [nkv·d, H]: block g ← R_gᵀ block g
            y = torch.einsum("gji,gjh->gih", rot, x.reshape(nkv, d, -1)).reshape(x.shape)
        elif role == "v_bias":
            y = torch.einsum("gji,gj->gi", rot, x.reshape(nkv, d)).reshape(x.shape)
        else:  # o: [H, nq·d]: column block h ← block h · R_{h//r}
            rq = rot.repeat_interleave(r, dim=0)  # [nq, d, d]
            y = torch.einsum("ohj,hji->ohi", x.reshape(x.shape[0], -1, d), rq).reshape(x.shape)
        out = y.to(torch.float32).to(t.dtype)
    return out.contiguous()


def _shard_files(base: Path) -> list[str]:
    idx = base / INDEX_NAME
    if idx.is_file():
        return sorted(set(json.loads(idx.read_text())["weight_map"].values()))
    return sorted(p.name for p in base.glob("*.safetensors") if p.is_file())


def apply_interventions(
    base_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    interventions: Iterable[Intervention | Mapping[str, Any]],
    *,
    record: str | os.PathLike | None = None,
) -> dict:
    """Write an intervened copy of the HF checkpoint ``base_dir`` to ``out_dir`` (atomically).

    ``out_dir`` gets the transformed safetensors shards (same file names, index, tensor
    dtypes and metadata as the base), every other top-level file of the base (config,
    tokenizer, generation config, ...) copied verbatim, and ``intervention.json``; other
    weight formats (``*.bin``, ``*.pth``, ...) and sub-directories are not copied. The same
    record is also written to ``record`` when given. Returns the record.
    """
    base = Path(base_dir)
    out = Path(out_dir)
    ivs = [iv if isinstance(iv, Intervention) else Intervention.from_dict(iv) for iv in interventions]
    if not ivs:
        raise ValueError("no interventions given")
    if out.resolve() == base.resolve():
        raise ValueError(f"out_dir {out} is the base checkpoint itself")
    if (base / RECORD_NAME).exists():
        raise ValueError(
            f"{base} is already an intervened checkpoint; composing interventions is not supported"
        )
    layers = [iv.layer for iv in ivs]
    dup = sorted({x for x in layers if layers.count(x) > 1})
    if dup:
        raise ValueError(f"layer(s) {dup} listed more than once; give one Intervention per layer")

    with Checkpoint(base, label="base") as ckpt:
        geo = HeadGeometry.from_config(ckpt.config)
        for iv in ivs:
            if iv.layer >= geo.num_layers:
                raise ValueError(f"layer {iv.layer} out of range: the model has {geo.num_layers} layers")
            _check_layer(ckpt, iv.layer, geo)

    entries: list[dict] = []
    rots: dict[int, torch.Tensor] = {}
    for iv in sorted(ivs, key=lambda v: v.layer):
        e: dict[str, Any] = asdict(iv)
        if iv.permute:
            e["kv_perm"], e["q_perm"] = _draw_permutation(iv, geo)
        if iv.rotate:
            e["rotation_seed"] = _mix(iv.seed, iv.layer, _STREAM_ROT)
            rots[iv.layer] = _rotations(e["rotation_seed"], geo.num_key_value_heads, geo.head_dim)
            e["rotation_kind"] = "haar"
            e["rotation_sha256"] = _fingerprint(rots[iv.layer])
        e["tensors"] = {}
        entries.append(e)
    by_layer = {e["layer"]: e for e in entries}

    rec: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "base": str(base),
        "model_type": ckpt.config.get("model_type"),
        "geometry": asdict(geo),
        "order": "permute, then rotate (R_g indexes the permuted KV heads)",
        "conventions": {
            "permute": "new head i = old head perm[i]; q/k/v rows, their biases and o_proj column"
            " blocks; q_perm[j*r+s] = kv_perm[j]*r + rho_j[s]",
            "rotate": "HF storage: v_proj[g] <- R_g^T v_proj[g], b_v[g] <- R_g^T b_v[g],"
            " o_proj[:, h] <- o_proj[:, h] R_{h//r}",
            "dtype": "transformed in fp64, stored in each tensor's original dtype",
        },
        "layers": entries,
    }

    files = _shard_files(base)
    with atomic_dir(out) as tmp:
        for fname in files:
            tensors: dict[str, torch.Tensor] = {}
            with safe_open(str(base / fname), framework="pt", device="cpu") as fh:
                meta = fh.metadata() or {"format": "pt"}
                for key in fh.keys():
                    t = fh.get_tensor(key)
                    layer, role = _attn_role(key)
                    e = by_layer.get(layer) if role is not None else None
                    if e is not None:
                        new = _transform(t, role, e, geo, rots.get(layer))
                        if new is not t:
                            what = [w for w, on in (("permuted", e["permute"] and is_permuted(key, rec)),
                                                    ("rotated", is_rotated(key, rec))) if on]  # fmt: skip
                            if what:
                                e["tensors"][key] = "+".join(what)
                            t = new
                    tensors[key] = t.contiguous()
            save_file(tensors, str(tmp / fname), metadata=meta)
            del tensors
        skipped = []
        for p in sorted(base.iterdir()):
            if p.name in files:
                continue
            if p.name.startswith(".") or p.is_dir() or p.name.endswith(_SKIP_SUFFIXES):
                skipped.append(p.name)
                continue
            shutil.copy2(p, tmp / p.name)
        rec["skipped_files"] = skipped
        write_json(tmp / RECORD_NAME, rec)
    if record is not None:
        write_json(record, rec)
    return rec
