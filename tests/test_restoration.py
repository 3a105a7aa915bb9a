"""UV restoration against independent numpy constructions and a tiny HF model built here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors import safe_open

from offprincipal.restoration import RECORD_NAME, group_layers, restore_checkpoint, restore_matrix

transformers = pytest.importorskip("transformers")


def _np_restore(wb, wf, p):
    """Independent numpy construction of the documented formula."""
    ub, _, vbt = np.linalg.svd(wb, full_matrices=False)
    uf, sf, vft = np.linalg.svd(wf, full_matrices=False)
    r = math.ceil(p * min(wf.shape))
    return ub[:, :r] @ np.diag(sf[:r]) @ vbt[:r] + uf[:, r:] @ np.diag(sf[r:]) @ vft[r:]


@pytest.mark.parametrize("shape", [(7, 5), (5, 9)])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_matches_numpy_construction(shape, p):
    rng = np.random.default_rng(0)
    wb = rng.standard_normal(shape)
    wf = wb + 0.3 * rng.standard_normal(shape)
    got = restore_matrix(torch.from_numpy(wb), torch.from_numpy(wf), p).numpy()
    np.testing.assert_allclose(got, _np_restore(wb, wf, p), atol=1e-10)
    if p == 0.0:
        np.testing.assert_allclose(got, wf, atol=1e-10)


def test_full_restoration_gives_base_subspaces_and_fine_tune_values():
    rng = np.random.default_rng(1)
    wb = rng.standard_normal((10, 6))
    wf = wb + 0.5 * rng.standard_normal((10, 6))
    w = restore_matrix(torch.from_numpy(wb), torch.from_numpy(wf), 1.0).numpy()
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    ub, _, vbt = np.linalg.svd(wb, full_matrices=False)
    np.testing.assert_allclose(s, np.linalg.svd(wf, compute_uv=False), atol=1e-10)
    for k in (1, 3, 6):
        assert np.rad2deg(scipy.linalg.subspace_angles(u[:, :k], ub[:, :k]).max()) < 1e-6
        assert np.rad2deg(scipy.linalg.subspace_angles(vt[:k].T, vbt[:k].T).max()) < 1e-6


def test_same_singular_values_gives_base_matrix():
    rng = np.random.default_rng(2)
    q1, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    q2, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    s = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    wb = q1[:, :6] @ np.diag(s) @ q2.T
    p1, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    wf = p1[:, :6] @ np.diag(s) @ q2.T  # same values, rotated left vectors
    got = restore_matrix(torch.from_numpy(wb), torch.from_numpy(wf), 1.0).float().to(torch.bfloat16)
    ref = torch.from_numpy(wb).float().to(torch.bfloat16)
    # both rounded from fp64 values within 1e-12: equal except at rare rounding ties
    diff = (got.float() - ref.float()).abs()
    assert float(diff.max()) <= float(ref.float().abs().max()) * 2**-8


def test_group_layers():
    assert list(group_layers("first", 28)) == list(range(7))
    assert list(group_layers("last", 28)) == list(range(21, 28))
    assert list(group_layers("middle", 28)) == list(range(10, 17))
    assert list(group_layers("first", 3)) == [0]
    with pytest.raises(ValueError, match="layer group"):
        group_layers("second", 4)


COMMON = dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("restore")
    cfg = transformers.Qwen2Config(**COMMON)
    torch.manual_seed(0)
    base = transformers.Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    ft = transformers.Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for (_, pb), (_, pf) in zip(base.named_parameters(), ft.named_parameters()):
            pf.copy_(pb + 0.02 * torch.randn_like(pb))
    b, f = root / "base", root / "ft"
    base.save_pretrained(b)
    ft.save_pretrained(f, max_shard_size="40KB")  # sharded: the output keeps this layout
    (f / "tokenizer.json").write_text('{"fake": "tokenizer"}\n')
    return b, f


def _tensors(d):
    out = {}
    for p in sorted(d.glob("*.safetensors")):
        with safe_open(str(p), framework="pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys()})
    return out


def test_p0_checkpoint_is_fine_tune_bitwise(pair, tmp_path):
    b, f = pair
    rec = restore_checkpoint(b, f, tmp_path / "out", top_p=0.0)
    assert rec["restored"] == []
    got, ref = _tensors(tmp_path / "out"), _tensors(f)
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k].dtype == ref[k].dtype and torch.equal(got[k].view(torch.int16), ref[k].view(torch.int16)), k
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (f / "tokenizer.json").read_bytes()


def test_top_p_checkpoint_loads_and_matches_numpy(pair, tmp_path):
    b, f = pair
    out = tmp_path / "out"
    rec = restore_checkpoint(b, f, out, top_p=0.25)
    assert json.loads((out / RECORD_NAME).read_text()) == rec
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 100)
    got, tb, tf = _tensors(out), _tensors(b), _tensors(f)
    mats = {k for k, t in tf.items() if t.ndim == 2 and ".layers." in k}
    assert set(rec["restored"]) == mats and "lm_head.weight" in tf  # embeddings, lm_head kept
    for k, t in tf.items():
        if k in mats:
            ref = _np_restore(tb[k].double().numpy(), t.double().numpy(), 0.25)
            exp = torch.from_numpy(ref).float().to(torch.bfloat16)
            assert got[k].dtype == torch.bfloat16
            assert float((got[k].float() - exp.float()).abs().max()) <= float(exp.float().abs().max()) * 2**-8, k
        else:
            assert torch.equal(got[k], t), k  # norms, embeddings and lm_head copied bitwise


def test_layer_group_checkpoint(pair, tmp_path):
    b, f = pair
    rec = restore_checkpoint(b, f, tmp_path / "out", layers="last")
    assert rec["layer_ids"] == [3]
    got, tb, tf = _tensors(tmp_path / "out"), _tensors(b), _tensors(f)
    for k, t in tf.items():
        if ".layers.3." in k and t.ndim == 2:
            assert k in rec["restored"]
            u = np.linalg.svd(got[k].double().numpy(), full_matrices=False)[0]
            ub = np.linalg.svd(tb[k].double().numpy(), full_matrices=False)[0]
            uf = np.linalg.svd(t.double().numpy(), full_matrices=False)[0]
            restored_deg = np.rad2deg(scipy.linalg.subspace_angles(u[:, :4], ub[:, :4]).max())
            ft_deg = np.rad2deg(scipy.linalg.subspace_angles(uf[:, :4], ub[:, :4]).max())
            assert restored_deg < 2.0 < ft_deg, (k, restored_deg, ft_deg)  # bf16 rounding only
        else:
            assert k not in rec["restored"] and torch.equal(got[k], t), k


def test_missing_base_tensor_names_it(pair, tmp_path):
    b, f = pair
    with pytest.raises(ValueError, match="exactly one"):
        restore_checkpoint(b, f, tmp_path / "x", top_p=0.2, layers="first")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no safetensors"):
        restore_checkpoint(empty, f, tmp_path / "y", top_p=0.2)
    assert not (tmp_path / "y").exists()
    # a base lacking one chosen matrix: the error names the tensor, no output appears
    from safetensors.torch import save_file

    # a base without the fine-tune's untied lm_head (a tied base) is fine: lm_head is kept
    tied = tmp_path / "tied"
    tied.mkdir()
    save_file({k: v for k, v in _tensors(b).items() if k != "lm_head.weight"}, str(tied / "model.safetensors"))
    rec = restore_checkpoint(tied, f, tmp_path / "w", top_p=0.5)
    assert "lm_head.weight" not in rec["restored"]
    assert torch.equal(_tensors(tmp_path / "w")["lm_head.weight"], _tensors(f)["lm_head.weight"])
    partial = tmp_path / "partial"
    partial.mkdir()
    tb = _tensors(b)
    gone = "model.layers.0.mlp.up_proj.weight"
    save_file({k: v for k, v in tb.items() if k != gone}, str(partial / "model.safetensors"))
    with pytest.raises(KeyError, match=gone):
        restore_checkpoint(partial, f, tmp_path / "z", top_p=0.2)
    assert not (tmp_path / "z").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_a_gpu_names_the_device_and_writes_nothing(pair, tmp_path):
    b, f = pair
    with pytest.raises(RuntimeError, match="'cuda'"):
        restore_checkpoint(b, f, tmp_path / "z", top_p=0.2, device="cuda")
    assert not (tmp_path / "z").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_restoration_matches_cpu_within_bf16(pair, tmp_path):
    b, f = pair
    restore_checkpoint(b, f, tmp_path / "cpu", top_p=0.2, device="cpu")
    restore_checkpoint(b, f, tmp_path / "gpu", top_p=0.2, device="cuda")
    cpu, gpu = _tensors(tmp_path / "cpu"), _tensors(tmp_path / "gpu")
    for k, t in cpu.items():
        # fp64 SVDs on two backends agree far below bf16's step; the casts may still differ by one ulp
        assert torch.allclose(t.float(), gpu[k].float(), rtol=2 ** -7, atol=0), k
