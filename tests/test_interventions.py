"""Tests for offprincipal.interventions (ROTATE / PERMUTE, paper App. D).

Independent check of function preservation: tiny real transformers models (Qwen2 with
q/k/v biases, Qwen3 with q/k norms, Llama with all attention biases and head_dim ≠
hidden/heads), random weights with planted spectra, logits before vs after reloading the
intervened checkpoint with ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from offprincipal.checkpoints.reader import Checkpoint
from offprincipal.interventions import (
    RECORD_NAME,
    Intervention,
    apply_interventions,
    is_permuted,
    is_rotated,
    load_record,
    map_mask_back,
    map_mask_forward,
    rotation_matrices,
)
from offprincipal.metrics.masks import overlap, principal_mask

transformers = pytest.importorskip("transformers")

COMMON = dict(
    vocab_size=100,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)
ARCHS = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(head_dim=16)),  # q/k/v biases
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16)),  # q_norm / k_norm
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(head_dim=24, attention_bias=True)),  # q/k/v/o biases
}
# layer 1: ROTATE+PERMUTE, layer 2: ROTATE only, layer 0: untouched
IVS = [Intervention(1, rotate=True, permute=True, seed=11), Intervention(2, rotate=True, seed=12)]
IVS_WITHIN = [
    Intervention(1, rotate=True, permute=True, permute_within_groups=True, seed=5),
    Intervention(2, rotate=True, seed=6),
]
ATTN = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")


def _planted(rows: int, cols: int, gen: torch.Generator, std: float) -> torch.Tensor:
    """Matrix with a decaying spectrum σ_i ∝ i^-1 (a 'pretrained-like' principal structure)."""
    r = min(rows, cols)
    u, _ = torch.linalg.qr(torch.randn(rows, r, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, r, generator=gen, dtype=torch.float64))
    s = torch.arange(1, r + 1, dtype=torch.float64).pow(-1.0)
    w = (u * s) @ v.T
    return (w * std / w.std()).float()


def _build(arch: str, seed: int = 0):
    cfg_name, model_name, extra = ARCHS[arch]
    cfg = getattr(transformers, cfg_name)(**COMMON, **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(cfg).eval()
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif "v_proj" in name or "o_proj" in name:
                p.copy_(_planted(*p.shape, gen, std=0.15))
            elif "q_proj" in name or "k_proj" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Per arch: fp32 and bf16 HF directories of the same model (llama fp32 is sharded)."""
    root = tmp_path_factory.mktemp("bases")
    out = {}
    for arch in ARCHS:
        model = _build(arch)
        d32, d16 = root / f"{arch}-fp32", root / f"{arch}-bf16"
        shard = {"max_shard_size": "60KB"} if arch == "llama" else {}
        model.save_pretrained(d32, **shard)
        model.to(torch.bfloat16).save_pretrained(d16)
        for d in (d32, d16):
            (d / "tokenizer.json").write_text('{"fake": "tokenizer"}\n')
            (d / "pytorch_model.bin").write_bytes(b"stale weights")
        out[arch] = (d32, d16)
    return out


_IDS = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(7))


def _logits(path: Path) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=_IDS).logits.double()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with Checkpoint(path) as c:
        return {n: c.load(n) for n in c.names()}


MEASURED: dict[str, float] = {}


# ----------------------------------------------------------------------------- function preservation


@pytest.mark.parametrize("within", [False, True], ids=["kv-groups", "within-groups"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_fp32_logits_preserved(bases, tmp_path, arch, within):
    base, _ = bases[arch]
    out = tmp_path / "iv"
    rec = apply_interventions(base, out, IVS_WITHIN if within else IVS)
    ref, new = _logits(base), _logits(out)
    diff = float((ref - new).abs().max())
    MEASURED[f"fp32/{arch}/{'within' if within else 'kv'}"] = diff
    assert ref.abs().max() > 1.0  # logits are not trivially small
    assert diff < 1e-4, f"{arch}: max |Δlogit| = {diff:.3g}"

    # the transform is not the identity: every q/k/v/o of layers 1 and 2 that should move did
    b, a = _tensors(base), _tensors(out)
    assert b.keys() == a.keys()
    for name in b:
        moved = not torch.equal(b[name], a[name])
        layer_changes = is_permuted(name, rec) or is_rotated(name, rec)
        assert moved == layer_changes, name
    assert all(is_rotated(f"model.layers.2.self_attn.{p}", rec) for p in ("v_proj.weight", "o_proj.weight"))
    assert not is_rotated("model.layers.2.self_attn.q_proj.weight", rec)
    assert not is_permuted("model.layers.2.self_attn.q_proj.weight", rec)
    if within:
        e = rec["layers"][0]
        assert e["q_perm"] != [g * 2 + s for g in e["kv_perm"] for s in range(2)]  # heads moved within groups
        assert [h // 2 for h in e["q_perm"]] == [g for g in e["kv_perm"] for _ in range(2)]  # groups kept


def test_negative_control_detects_wrong_convention(bases, tmp_path):
    """Using R instead of Rᵀ on v_proj breaks the function: the logits test is sensitive."""
    base, _ = bases["qwen2"]
    out = tmp_path / "iv"
    rec = apply_interventions(base, out, [Intervention(2, rotate=True, seed=3)])
    rot = rotation_matrices(rec, 2)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        v = model.model.layers[2].self_attn.v_proj
        w = v.weight.double().reshape(2, 16, -1)
        # undo Rᵀ and apply R: block g ← R_g R_g W_g^orig
        w = torch.einsum("gij,gjk,gkh->gih", rot, rot, w).reshape(v.weight.shape)
        v.weight.copy_(w.float())
        bad = model(input_ids=_IDS).logits.double()
    assert float((bad - _logits(base)).abs().max()) > 1e-2


@pytest.mark.parametrize("arch", list(ARCHS))
def test_bf16_saved_dtype_and_approximate_function(bases, tmp_path, arch):
    _, base = bases[arch]
    out = tmp_path / "iv"
    rec = apply_interventions(base, out, IVS)
    b, a = _tensors(base), _tensors(out)
    assert all(t.dtype == torch.bfloat16 for t in a.values())
    entry = rec["layers"][0]
    assert entry["layer"] == 1 and entry["permute"] and entry["rotate"]
    for name in b:
        if is_rotated(name, rec):
            assert not torch.equal(b[name], a[name])
        elif is_permuted(name, rec):  # a pure permutation is an exact copy, even in bf16
            back = map_mask_back(a[name], name, rec)
            assert torch.equal(back, b[name]), name
        else:
            assert torch.equal(b[name], a[name]), name
    ref, new = _logits(base), _logits(out)
    diff = float((ref - new).abs().max())
    rel = diff / float(ref.abs().max())
    MEASURED[f"bf16/{arch}"] = diff
    MEASURED[f"bf16/{arch}/rel"] = rel
    assert 0 < diff and rel < 0.05, f"{arch}: bf16 max |Δlogit| = {diff:.3g} ({rel:.2%} of max |logit|)"


# ----------------------------------------------------------------------------- geometry


def _svd(w: torch.Tensor):
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    return u, s, vh.T


def test_rotation_geometry(bases, tmp_path):
    base, _ = bases["qwen3"]
    out = tmp_path / "iv"
    rec = apply_interventions(base, out, IVS)
    b, a = _tensors(base), _tensors(out)
    rot = rotation_matrices(rec, 2)
    assert rot.shape == (2, 16, 16)
    assert torch.allclose(
        rot @ rot.transpose(1, 2), torch.eye(16, dtype=torch.float64).expand(2, 16, 16), atol=1e-12
    )

    # the exact construction (layer 2, rotate only): v_g' = R_gᵀ v_g, o_h' = o_h R_{h//2}
    v, vn = (
        b["model.layers.2.self_attn.v_proj.weight"].double(),
        a["model.layers.2.self_attn.v_proj.weight"].double(),
    )
    o, on = (
        b["model.layers.2.self_attn.o_proj.weight"].double(),
        a["model.layers.2.self_attn.o_proj.weight"].double(),
    )
    for g in range(2):
        assert torch.allclose(vn[16 * g : 16 * g + 16], rot[g].T @ v[16 * g : 16 * g + 16], atol=1e-6)
    for h in range(4):
        assert torch.allclose(
            on[:, 16 * h : 16 * h + 16], o[:, 16 * h : 16 * h + 16] @ rot[h // 2], atol=1e-6
        )

    k, alpha = 8, 0.5
    for layer in (1, 2):
        for proj, side in (("v_proj", "V"), ("o_proj", "U")):
            name = f"model.layers.{layer}.self_attn.{proj}.weight"
            ub, sb, vb = _svd(b[name])
            ua, sa, va = _svd(a[name])
            # block-orthogonal left (v) / right (o) multiplication keeps the spectrum ...
            assert torch.allclose(sa, sb, rtol=1e-5, atol=1e-6)
            # ... and the singular subspace on the untouched side (rows of v index heads, so
            # for v the input side V is kept; for o the output side U is kept)
            keep_b, keep_a = (vb, va) if side == "V" else (ub, ua)
            cos = torch.linalg.svdvals(keep_b[:, :k].T @ keep_a[:, :k])
            assert float(cos.min()) > 1 - 1e-5
            # ... but the entries move: the principal mask falls to the random level
            mb = principal_mask(ub, sb, vb, k=k, alpha=alpha)
            ma = principal_mask(ua, sa, va, k=k, alpha=alpha)
            ov, baseline = overlap(mb, ma)
            assert baseline == pytest.approx(alpha)
            assert abs(ov - alpha) < 0.08, f"{name}: principal-mask overlap {ov:.3f}"
            MEASURED[f"overlap/{name}"] = ov
    # untouched layer: identical tensors, identical masks
    name = "model.layers.0.self_attn.o_proj.weight"
    assert torch.equal(b[name], a[name])
    ub, sb, vb = _svd(b[name])
    assert (
        overlap(
            principal_mask(ub, sb, vb, k=k, alpha=alpha), principal_mask(*_svd(a[name]), k=k, alpha=alpha)
        )[0]
        == 1.0
    )

    # a PERMUTE'd (not rotated) q_proj: the principal mask of the intervened base, mapped
    # back, is the base's principal mask (SVD is permutation-equivariant)
    name = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(b[name], a[name])
    mb = principal_mask(*_svd(b[name]), k=k, alpha=alpha)
    ma = principal_mask(*_svd(a[name]), k=k, alpha=alpha)
    assert overlap(mb, ma)[0] < 0.9  # not mapped back: coordinates disagree
    agree = float((map_mask_back(ma, name, rec) == mb).double().mean())
    assert agree > 0.999


# ----------------------------------------------------------------------------- masks


def _plant(src: Path, dst: Path, masks: dict[str, torch.Tensor]) -> None:
    """Copy of ``src`` where the entries of ``masks`` are moved by +1 (fp32 checkpoint)."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    (dst / "pytorch_model.bin").unlink()
    for f in sorted(dst.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            meta = fh.metadata()
            ts = {k: fh.get_tensor(k) for k in fh.keys()}
        for k in ts:
            if k in masks:
                ts[k] = ts[k] + masks[k].to(ts[k].dtype)
        save_file(ts, str(f), metadata=meta)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_map_mask_back_recovers_planted_mask(bases, tmp_path, arch):
    base, _ = bases[arch]
    gen = torch.Generator().manual_seed(3)
    with Checkpoint(base) as c:
        names = [n for n in c.names() if "self_attn" in n and c.info(n).layer in (0, 1, 2)]
        planted = {n: torch.rand(c.shape(n), generator=gen) < 0.3 for n in names}
    marked = tmp_path / "marked"
    _plant(base, marked, planted)
    rec = apply_interventions(base, tmp_path / "a", IVS, record=tmp_path / "rec.json")
    rec2 = apply_interventions(marked, tmp_path / "b", IVS)
    assert rec2["layers"] == rec["layers"]  # the draws depend on the seeds only
    ta, tb = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    config = json.loads((base / "config.json").read_text())
    n_checked = n_rot = 0
    for n in names:
        seen = ta[n] != tb[n]  # the update mask in intervened coordinates
        if is_rotated(n, rec):
            with pytest.raises(ValueError, match="ROTATE"):
                map_mask_back(seen, n, rec, config)
            n_rot += 1
            continue
        back = map_mask_back(seen, n, rec, config)
        assert isinstance(back, torch.Tensor) and torch.equal(back, planted[n]), n
        np_back = map_mask_back(seen.numpy(), n, rec, config)
        assert isinstance(np_back, np.ndarray) and np.array_equal(np_back, planted[n].numpy())
        assert torch.equal(map_mask_forward(planted[n], n, rec, config), seen)
        if is_permuted(n, rec):
            assert not torch.equal(seen, planted[n])  # mapping was needed
        n_checked += 1
    assert n_rot == 6  # v weight, v bias, o weight on layers 1 and 2
    assert n_checked > 10


def test_mask_helpers_validate(bases, tmp_path):
    base, _ = bases["qwen3"]
    rec = apply_interventions(base, tmp_path / "iv", IVS)
    name = "model.layers.1.self_attn.k_proj.weight"
    with pytest.raises(ValueError, match="does not fit"):
        map_mask_back(np.zeros((5, 64), bool), name, rec)
    bad_cfg = dict(json.loads((base / "config.json").read_text()), num_key_value_heads=4)
    with pytest.raises(ValueError, match="do not match"):
        map_mask_back(np.zeros((32, 64), bool), name, rec, bad_cfg)
    # untouched tensors pass through unchanged (same object)
    m = np.ones((96, 64), bool)
    assert map_mask_back(m, "model.layers.1.mlp.up_proj.weight", rec) is m
    assert map_mask_back(np.ones(16, bool), "model.layers.1.self_attn.k_norm.weight", rec).all()
    with pytest.raises(ValueError, match="no elementwise correspondence"):
        map_mask_back(np.ones((64, 64), bool), "model.layers.2.self_attn.o_proj.weight", rec)


# ----------------------------------------------------------------------------- files and record


def test_outputs_record_and_determinism(bases, tmp_path):
    base, _ = bases["llama"]  # sharded fp32
    rec = apply_interventions(base, tmp_path / "a", IVS, record=tmp_path / "rec" / "r.json")
    apply_interventions(base, tmp_path / "b", [vars(iv) for iv in IVS])  # dicts accepted
    a, b = tmp_path / "a", tmp_path / "b"
    assert json.loads((tmp_path / "rec" / "r.json").read_text()) == json.loads(json.dumps(rec))
    assert load_record(a) == load_record(tmp_path / "rec" / "r.json")
    shards = sorted(p.name for p in base.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(p.name for p in a.glob("*.safetensors")) == shards
    for s in shards:
        assert (a / s).read_bytes() == (b / s).read_bytes()
    for f in ("config.json", "tokenizer.json", "model.safetensors.index.json", "generation_config.json"):
        assert (a / f).read_bytes() == (base / f).read_bytes(), f
    assert not (a / "pytorch_model.bin").exists() and "pytorch_model.bin" in rec["skipped_files"]
    assert (a / RECORD_NAME).is_file()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # atomic: no leftovers
    geo = rec["geometry"]
    assert (geo["num_attention_heads"], geo["num_key_value_heads"], geo["head_dim"]) == (4, 2, 24)
    e1, e2 = rec["layers"]
    assert sorted(e1["kv_perm"]) == [0, 1] and e1["kv_perm"] != [0, 1]  # never the identity
    assert sorted(e1["q_perm"]) == [0, 1, 2, 3]
    assert "kv_perm" not in e2 and isinstance(e2["rotation_seed"], int)
    assert set(e2["tensors"].values()) == {"rotated"}
    assert e1["tensors"]["model.layers.1.self_attn.v_proj.weight"] == "permuted+rotated"
    assert e1["tensors"]["model.layers.1.self_attn.q_proj.weight"] == "permuted"
    # a different seed gives different rotations
    other = apply_interventions(base, tmp_path / "c", [Intervention(2, rotate=True, seed=13)])
    assert other["layers"][0]["rotation_sha256"] != e2["rotation_sha256"]


def test_invalid_requests(bases, tmp_path):
    base, _ = bases["qwen3"]
    with pytest.raises(ValueError, match="neither"):
        Intervention(1)
    with pytest.raises(ValueError, match="out of range"):
        apply_interventions(base, tmp_path / "x", [Intervention(3, rotate=True)])
    with pytest.raises(ValueError, match="more than once"):
        apply_interventions(
            base, tmp_path / "x", [Intervention(1, rotate=True), Intervention(1, permute=True)]
        )
    with pytest.raises(ValueError, match="base checkpoint itself"):
        apply_interventions(base, base, IVS)
    with pytest.raises(ValueError, match="unknown intervention field"):
        apply_interventions(base, tmp_path / "x", [{"layer": 1, "rotate": True, "angle": 3}])
    apply_interventions(base, tmp_path / "iv", IVS)
    with pytest.raises(ValueError, match="already an intervened"):
        apply_interventions(tmp_path / "iv", tmp_path / "iv2", IVS)
    assert not (tmp_path / "x").exists()


def test_report_measurements():
    """Not a check: prints what the other tests measured (run with -s to see it)."""
    for k, v in sorted(MEASURED.items()):
        print(f"{k}: {v:.3g}" if math.isfinite(v) else f"{k}: {v}")
