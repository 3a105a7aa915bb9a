"""Tests for the synthetic checkpoint builder (planted structure checked independently).

Every structural check below recomputes its quantity with numpy/scipy from the saved
safetensors files; none uses helpers from offprincipal.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import load_file

from offprincipal.checkpoints.synthetic import build_base, build_variant

SIZES = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, vocab_size=256)
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
K = 4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    build_base(root / "base", seed=1, **SIZES)
    base = root / "base"
    build_variant(base, root / "dense", kind="dense", seed=2, scale=1.0)
    for s in (11, 12):
        build_variant(base, root / f"rl{s}", kind="offprincipal", seed=s, scale=1.0, shared_seed=7)
    for sf in (0.25, 0.5):
        build_variant(
            base, root / f"rl11_{sf}", kind="offprincipal", seed=11, scale=1.0, shared_seed=7, step_fraction=sf
        )
    return root


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _proj_names(tensors):
    return sorted(n for n in tensors if tensors[n].ndim == 2 and any(f".{p}." in n for p in PROJ))


def _changed(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a.view(torch.int16) != b.view(torch.int16)).numpy()


def _np64(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy().astype(np.float64)


def _nss(a: np.ndarray, b: np.ndarray) -> float:
    sa = np.linalg.svd(a, compute_uv=False)
    sb = np.linalg.svd(b, compute_uv=False)
    return float(np.linalg.norm(sb - sa) / np.linalg.norm(sa))


def _max_angle_deg(a: np.ndarray, b: np.ndarray, k: int = K) -> float:
    ua = np.linalg.svd(a, full_matrices=False)[0][:, :k]
    ub = np.linalg.svd(b, full_matrices=False)[0][:, :k]
    return float(np.degrees(scipy.linalg.subspace_angles(ua, ub).max()))


def _pair_stats(root, variant):
    base, ft = _weights(root / "base"), _weights(root / variant)
    names = _proj_names(base)
    frac, nss, ang, mag_ch, mag_un = [], [], [], [], []
    for n in names:
        ch = _changed(base[n], ft[n])
        wb, wf = _np64(base[n]), _np64(ft[n])
        frac.append(ch.mean())
        nss.append(_nss(wb, wf))
        ang.append(_max_angle_deg(wb, wf))
        if ch.any() and (~ch).any():
            mag_ch.append(np.abs(wb[ch]).mean())
            mag_un.append(np.abs(wb[~ch]).mean())
    return dict(
        frac=float(np.mean(frac)),
        nss=float(np.mean(nss)),
        angle=float(np.mean(ang)),
        mag_changed=float(np.mean(mag_ch)) if mag_ch else float("nan"),
        mag_unchanged=float(np.mean(mag_un)) if mag_un else float("nan"),
    )


# ----------------------------------------------------------------------------- format


@pytest.mark.parametrize("variant", ["base", "dense", "rl11"])
def test_loads_and_runs_forward(built, variant):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(built / variant)
    assert model.config.model_type == "qwen3"
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert model.config.tie_word_embeddings
    assert model.dtype == torch.bfloat16
    ids = torch.arange(8).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, 8, SIZES["vocab_size"])
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("variant", ["base", "dense", "rl11"])
def test_all_weights_bf16_and_config_says_so(built, variant):
    tensors = _weights(built / variant)
    assert tensors and all(t.dtype == torch.bfloat16 for t in tensors.values())
    cfg = json.loads((built / variant / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    manifest = json.loads((built / variant / "offprincipal_synthetic.json").read_text())
    assert manifest["synthetic"] is True
    assert "not a trained model" in manifest["note"]


def test_same_tensor_names_and_shapes(built):
    base = _weights(built / "base")
    for v in ("dense", "rl11", "rl11_0.25"):
        ft = _weights(built / v)
        assert sorted(ft) == sorted(base)
        assert all(ft[n].shape == base[n].shape for n in base)


def test_base_has_principal_structure(built):
    base = _weights(built / "base")
    for n in _proj_names(base):
        w = _np64(base[n])
        assert 0.012 < w.std() < 0.03
        s = np.linalg.svd(w, compute_uv=False)
        # power-law decay: a clear gap between the head and the tail of the spectrum
        assert s[0] / s[len(s) // 2] > 3.0


def test_deterministic(tmp_path, built):
    for i in (1, 2):
        build_base(tmp_path / f"base{i}", seed=1, **SIZES)
        build_variant(tmp_path / f"base{i}", tmp_path / f"rl{i}", kind="offprincipal", seed=11, scale=1.0, shared_seed=7)
        build_variant(tmp_path / f"base{i}", tmp_path / f"dense{i}", kind="dense", seed=2, scale=1.0)
    for name in ("base", "rl", "dense"):
        a = (tmp_path / f"{name}1" / "model.safetensors").read_bytes()
        b = (tmp_path / f"{name}2" / "model.safetensors").read_bytes()
        assert a == b
    # and identical to the fixture's build with the same seeds
    assert (tmp_path / "rl1" / "model.safetensors").read_bytes() == (built / "rl11" / "model.safetensors").read_bytes()


def test_different_seed_differs(tmp_path, built):
    build_base(tmp_path / "base", seed=2, **SIZES)
    assert (tmp_path / "base" / "model.safetensors").read_bytes() != (built / "base" / "model.safetensors").read_bytes()


def test_bad_kind_writes_nothing(tmp_path, built):
    with pytest.raises(ValueError):
        build_variant(built / "base", tmp_path / "x", kind="nope", seed=0, scale=1.0)
    assert not (tmp_path / "x").exists()
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- planted structure


def test_offprincipal_sparse_low_magnitude(built):
    st = _pair_stats(built, "rl11")
    assert 0.2 < st["frac"] < 0.6
    assert st["mag_changed"] < st["mag_unchanged"]


def test_offprincipal_leaves_norms_unchanged(built):
    base, ft = _weights(built / "base"), _weights(built / "rl11")
    for n in base:
        if base[n].ndim == 1:
            assert torch.equal(base[n].view(torch.int16), ft[n].view(torch.int16)), n


def test_dense_changes_almost_everything(built):
    base, ft = _weights(built / "base"), _weights(built / "dense")
    total = sum(base[n].numel() for n in base)
    changed = sum(int(_changed(base[n], ft[n]).sum()) for n in base)
    assert changed / total > 0.9
    assert _pair_stats(built, "dense")["frac"] > 0.9


def test_spectrum_preserved_offprincipal_not_dense(built):
    rl, dense = _pair_stats(built, "rl11"), _pair_stats(built, "dense")
    assert rl["nss"] < 1e-2
    assert dense["nss"] > 3e-2
    assert rl["nss"] < dense["nss"] / 10


def test_principal_angles_smaller_offprincipal(built):
    rl, dense = _pair_stats(built, "rl11"), _pair_stats(built, "dense")
    assert rl["angle"] < 1.0
    assert dense["angle"] > 10.0
    assert rl["angle"] < dense["angle"]


def test_crossrun_jaccard_above_bernoulli(built):
    base, a, b = _weights(built / "base"), _weights(built / "rl11"), _weights(built / "rl12")
    js, baselines = [], []
    for n in _proj_names(base):
        ma, mb = _changed(base[n], a[n]), _changed(base[n], b[n])
        assert not np.array_equal(ma, mb)  # different runs, not copies
        p, q = ma.mean(), mb.mean()
        js.append((ma & mb).sum() / (ma | mb).sum())
        baselines.append(p * q / (p + q - p * q))
    assert np.mean(js) > np.mean(baselines) + 0.1
    assert all(j > bl for j, bl in zip(js, baselines))


def test_step_fraction_grows_changed_set(built):
    fracs = [_pair_stats(built, v)["frac"] for v in ("rl11_0.25", "rl11_0.5", "rl11")]
    assert fracs[0] < fracs[1] < fracs[2]
    # same run: earlier changed sets are nested in later ones
    base, early, late = _weights(built / "base"), _weights(built / "rl11_0.25"), _weights(built / "rl11")
    for n in _proj_names(base):
        me, ml = _changed(base[n], early[n]), _changed(base[n], late[n])
        assert (me & ~ml).mean() < 0.01
