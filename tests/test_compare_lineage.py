"""The lineage check before any metric: architecture errors, and the warning for a fine-tune
that shares almost no weights and no spectrum with its stated base."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from offprincipal.checkpoints.lineage import check_lineage, lineage_report, probe_layer
from offprincipal.checkpoints.reader import Checkpoint, CheckpointMismatch
from offprincipal.checkpoints.synthetic import build_base, build_variant
from offprincipal.io import write_json

transformers = pytest.importorskip("transformers")

SIZES = dict(hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=128, vocab_size=64)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lineage")
    build_base(tmp / "base", seed=3, **SIZES)
    build_base(tmp / "stranger", seed=9, **SIZES)  # same architecture and spectra law, unrelated weights
    build_variant(tmp / "base", tmp / "rl", kind="offprincipal", seed=1, scale=1.0)
    build_variant(tmp / "base", tmp / "sft", kind="dense", seed=2, scale=1.0)
    return tmp


def _check(tmp, base, ft):
    with Checkpoint(tmp / base, label=base) as b, Checkpoint(tmp / ft, label=ft) as f:
        return check_lineage(b, f)


def test_real_fine_tunes_raise_no_warning(world):
    rl = _check(world, "base", "rl")
    assert rl["warning"] is None and not rl["shares_almost_no_weights"]
    sft = _check(world, "base", "sft")  # dense: nearly every weight moved, but the spectrum stays
    assert sft["warning"] is None
    assert sft["layers_with_different_spectrum"] == 0
    assert [r["tensor"] for r in rl["layers"]] == [f"model.layers.{i}.self_attn.k_proj.weight" for i in range(3)]


def test_an_unrelated_model_of_the_same_architecture_is_flagged_naming_both(world):
    rec = _check(world, "base", "stranger")
    assert rec["shares_almost_no_weights"]
    assert rec["layers_with_different_spectrum"] == rec["layers_checked"] == 3
    w = rec["warning"]
    assert w and "'stranger'" in w and "'base'" in w and "may not descend" in w
    out = world / "lineage.json"
    write_json(world / "b.json", {"name": "base", "path": str(world / "base")})
    write_json(world / "s.json", {"name": "stranger", "path": str(world / "stranger")})
    assert lineage_report(world / "b.json", world / "s.json", out)["warning"] == w
    assert json.loads(out.read_text())["warning"] == w


def test_probe_against_independent_counts():
    g = torch.Generator().manual_seed(0)
    w0 = (torch.randn(48, 96, generator=g) * 0.02).bfloat16()
    w1 = w0.clone()
    w1[:10] = (torch.randn(10, 96, generator=g) * 0.02).bfloat16()
    w1[20, 3] = -0.0 if float(w0[20, 3]) == 0 else w1[20, 3]
    r = probe_layer(w0, w1)
    a = w0.view(torch.int16).numpy().astype(np.int64) & 0xFFFF
    b = w1.view(torch.int16).numpy().astype(np.int64) & 0xFFFF
    a[a == 0x8000] = 0
    b[b == 0x8000] = 0
    assert r["equal"] == int((a == b).sum())
    ha, hb = np.bincount(a.ravel(), minlength=65536), np.bincount(b.ravel(), minlength=65536)
    assert r["chance_fraction"] == pytest.approx(float((ha * hb).sum()) / a.size**2)
    # overlap of identical subspaces is 1; a random matrix sits near the random level k/m, k/n
    same = probe_layer(w0, w0)
    assert same["subspace_overlap"] == pytest.approx(1.0) and not same["differs"]
    other = probe_layer(w0, (torch.randn(48, 96, generator=g) * 0.02).bfloat16())
    assert other["differs"] and other["subspace_overlap"] < 3 * other["chance_overlap"]
    assert other["k"] == 12 and other["chance_overlap"] == pytest.approx(0.5 * (12 / 48 + 12 / 96))


def _tiny(kind: str, path, seed=0, **over):
    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, tie_word_embeddings=False)
    cfg.update(over)
    torch.manual_seed(seed)
    model = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
             "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM)}[kind]
    model[1](model[0](**cfg)).save_pretrained(path)
    return path


def test_architecture_mismatches_are_errors_naming_both_checkpoints(tmp_path):
    llama = _tiny("llama", tmp_path / "llama")
    mistral = _tiny("mistral", tmp_path / "mistral")  # the very same tensor names and shapes
    with Checkpoint(llama, label="a") as a, Checkpoint(mistral, label="b") as b:
        with pytest.raises(CheckpointMismatch, match=r"'a' \(base.*'b' \(fine-tuned.*'llama'.*'mistral'"):
            check_lineage(a, b)
    wider = _tiny("llama", tmp_path / "wider", intermediate_size=64)
    with Checkpoint(llama, label="a") as a, Checkpoint(wider, label="c") as c:
        with pytest.raises(CheckpointMismatch, match=r"model.layers.0.mlp.down_proj.weight.*base 'a'.*ft 'c'"):
            check_lineage(a, c)


def test_two_random_inits_are_unrelated(tmp_path):
    a = _tiny("llama", tmp_path / "a", seed=0)
    b = _tiny("llama", tmp_path / "b", seed=1)
    with Checkpoint(a, label="a") as x, Checkpoint(b, label="b") as y:
        assert check_lineage(x, y)["warning"]
