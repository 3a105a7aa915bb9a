"""Tests for offprincipal.checkpoints.reader against tiny real transformers checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from offprincipal.checkpoints.naming import classify
from offprincipal.checkpoints.reader import (
    Checkpoint,
    CheckpointError,
    CheckpointMismatch,
    TensorPair,
    iter_pairs,
    pair_names,
)

transformers = pytest.importorskip("transformers")

COMMON = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
)
ARCHS = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(tie_word_embeddings=False)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(tie_word_embeddings=False)),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(
            tie_word_embeddings=False,
            moe_intermediate_size=16,
            num_experts=4,
            num_experts_per_tok=2,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        ),
    ),
}
N_EXPERTS, MOE_I = 4, 16


def build(arch: str, seed: int = 0, **overrides):
    cfg_cls, model_cls, extra = ARCHS[arch]
    cfg = getattr(transformers, cfg_cls)(**{**COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():  # norms init to ones; make every tensor seed-dependent
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def save(model, path, **kwargs):
    model.save_pretrained(str(path), safe_serialization=True, **kwargs)
    return path


def expected_tensors(model) -> dict[str, torch.Tensor]:
    """What a per-expert HF checkpoint of ``model`` should hold, computed from the model.

    Fused experts are split the way Qwen3MoeExperts.forward uses them:
    ``linear(x, gate_up_proj[e]).chunk(2, dim=-1)`` -> gate rows first, then up rows.
    """
    out = {}
    tied = model.config.tie_word_embeddings
    for name, t in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len(".gate_up_proj")]
            for e in range(t.shape[0]):
                gate, up = t[e].chunk(2, dim=0)
                out[f"{prefix}.{e}.gate_proj.weight"] = gate
                out[f"{prefix}.{e}.up_proj.weight"] = up
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len(".down_proj")]
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    return out


def stored_keys(path) -> set[str]:
    keys = set()
    for f in os.listdir(path):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(path, f), framework="pt") as h:
                keys |= set(h.keys())
    return keys


@pytest.fixture(scope="module")
def reader_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader_models")
    out = {}
    for arch in ARCHS:
        model = build(arch)
        out[arch] = (model, save(model, root / arch))
    return out


def assert_reads_model(ck: Checkpoint, model):
    expected = expected_tensors(model)
    assert sorted(ck.names()) == sorted(expected)
    for name in ck.names():
        t = ck.load(name)
        exp = expected[name]
        assert t.dtype == exp.dtype == ck.dtype(name), name
        assert tuple(t.shape) == ck.shape(name) == tuple(exp.shape), name
        assert torch.equal(t, exp), name
        assert ck.info(name) == classify(name)


# ---------------------------------------------------------------------- reading


@pytest.mark.parametrize("arch", list(ARCHS))
def test_reads_every_tensor_bitwise(reader_models, arch):
    model, path = reader_models[arch]
    with Checkpoint(path, label=arch) as ck:
        assert ck.label == arch and ck.path == path
        assert ck.config["model_type"] == arch
        assert ck.tied_embeddings is (arch == "qwen2")
        assert_reads_model(ck, model)
        kinds = {ck.info(n).kind for n in ck.names()}
        assert "other" not in kinds
    if arch == "qwen2":
        assert "lm_head.weight" not in ck.names()
        assert any(n.endswith("q_proj.bias") for n in ck.names())
    if arch == "qwen3":
        assert ck.shape("model.layers.0.self_attn.k_proj.weight") == (16, 32)  # GQA
        assert ck.info("model.layers.1.self_attn.k_norm.weight").proj == "k_norm"
    if arch == "qwen3_moe":
        assert ck.info("model.layers.1.mlp.gate.weight").kind == "router"
        assert sum(ck.info(n).kind == "expert" for n in ck.names()) == 2 * N_EXPERTS * 3


def test_bf16_stored_and_default_label(tmp_path):
    model = build("llama", seed=3).to(torch.bfloat16)
    path = save(model, tmp_path / "llama_bf16")
    ck = Checkpoint(path)
    assert ck.label == "llama_bf16"
    assert all(ck.dtype(n) == torch.bfloat16 for n in ck.names())
    assert_reads_model(ck, model)
    ck.close()
    with pytest.raises(CheckpointError, match="closed"):
        ck.load(ck.names()[0])


def test_natural_layer_order(tmp_path):
    d = tmp_path / "order"
    d.mkdir()
    names = [f"model.layers.{i}.mlp.down_proj.weight" for i in (10, 2, 1, 0)] + [
        "model.norm.weight",
        "model.embed_tokens.weight",
    ]
    save_file({n: torch.zeros(2, 2) for n in names}, str(d / "model.safetensors"))
    ck = Checkpoint(d)
    assert ck.names() == [
        "model.embed_tokens.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.2.mlp.down_proj.weight",
        "model.layers.10.mlp.down_proj.weight",
        "model.norm.weight",
    ]
    assert ck.config == {} and ck.tied_embeddings is True  # embed present, no lm_head -> tied


@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe"])
def test_sharded_with_index(tmp_path, reader_models, arch):
    model, single = reader_models[arch]
    path = save(model, tmp_path / arch, max_shard_size="20KB")
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    assert (path / "model.safetensors.index.json").is_file() and len(shards) > 2
    ck = Checkpoint(path)
    assert_reads_model(ck, model)
    ref = Checkpoint(single)
    assert ck.names() == ref.names()
    # sharded vs single-file pair of the same weights: every pair equal
    for pair in iter_pairs(ref, ck, dtype=None):
        assert torch.equal(pair.base, pair.ft)


def test_several_files_without_index(tmp_path, reader_models):
    model, _ = reader_models["mistral"]
    sd = expected_tensors(model)
    names = sorted(sd)
    d = tmp_path / "split"
    d.mkdir()
    save_file({n: sd[n].contiguous() for n in names[::2]}, str(d / "a.safetensors"))
    save_file({n: sd[n].contiguous() for n in names[1::2]}, str(d / "b.safetensors"))
    assert_reads_model(Checkpoint(d), model)
    # the same tensor in two files is an error naming it
    save_file({names[0]: sd[names[0]].contiguous()}, str(d / "c.safetensors"))
    with pytest.raises(CheckpointError, match=names[0].replace(".", r"\.")):
        Checkpoint(d)


# ---------------------------------------------------------------------- dtypes


def test_fp32_ft_against_bf16_base(tmp_path):
    base_model = build("qwen3", seed=0).to(torch.bfloat16)
    ft_model = build("qwen3", seed=1)  # fp32
    base = Checkpoint(save(base_model, tmp_path / "base"), label="base")
    ft = Checkpoint(save(ft_model, tmp_path / "ft"), label="ft")
    base_sd, ft_sd = expected_tensors(base_model), expected_tensors(ft_model)
    n = 0
    for pair in iter_pairs(base, ft):
        name = pair.info.name
        assert isinstance(pair, TensorPair) and pair.info == classify(name)
        assert pair.base_dtype == torch.bfloat16 and pair.ft_dtype == torch.float32
        assert pair.base.dtype == pair.ft.dtype == torch.bfloat16
        assert torch.equal(pair.base, base_sd[name])
        assert torch.equal(pair.ft, ft_sd[name].to(torch.bfloat16))
        assert pair.note == ""
        n += 1
    assert n == len(base_sd)
    for pair in iter_pairs(base, ft, dtype=None):
        assert pair.ft.dtype == torch.float32 and torch.equal(pair.ft, ft_sd[pair.info.name])
        assert pair.base.dtype == torch.bfloat16
    pairs = list(iter_pairs(base, ft, dtype=torch.float64))
    assert all(p.base.dtype == p.ft.dtype == torch.float64 for p in pairs)


def test_bf16_cast_rounds_to_nearest_even(tmp_path):
    # bf16 keeps 7 mantissa bits: between 1 and 1+2^-7 the halfway point 1+2^-8 rounds to the
    # even neighbour 1; 1+3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even) -> 1+2^-6.
    vals32 = torch.tensor(
        [[1 + 2**-8, 1 + 3 * 2**-8], [1 + 2**-8 + 2**-20, -(1 + 2**-8)]], dtype=torch.float32
    )
    want = torch.tensor([[1.0, 1 + 2**-6], [1 + 2**-7, -1.0]], dtype=torch.float64)
    for side, t in (("base", torch.ones(2, 2, dtype=torch.bfloat16)), ("ft", vals32)):
        (tmp_path / side).mkdir()
        save_file({"model.layers.0.mlp.up_proj.weight": t}, str(tmp_path / side / "model.safetensors"))
    (pair,) = iter_pairs(Checkpoint(tmp_path / "base"), Checkpoint(tmp_path / "ft"))
    assert torch.equal(pair.ft.double(), want)


# ---------------------------------------------------------------------- tied lm_head


def test_tied_and_untied_lm_head(tmp_path, reader_models):
    _, tied_path = reader_models["qwen2"]
    untied_model = build("qwen2", seed=5, tie_word_embeddings=False)
    untied_path = save(untied_model, tmp_path / "untied")
    assert "lm_head.weight" in stored_keys(untied_path)
    assert "lm_head.weight" not in stored_keys(tied_path)
    tied, untied = Checkpoint(tied_path, label="tied"), Checkpoint(untied_path, label="untied")
    assert tied.tied_embeddings and not untied.tied_embeddings

    trip = pair_names(tied, untied)
    assert ("lm_head.weight", "model.embed_tokens.weight", "lm_head.weight") in trip
    assert ("model.embed_tokens.weight",) * 3 in trip
    (head,) = iter_pairs(tied, untied, names=["lm_head.weight"], dtype=None)
    assert torch.equal(head.base, tied.load("model.embed_tokens.weight"))
    assert torch.equal(head.ft, untied_model.state_dict()["lm_head.weight"])
    assert "tied" in head.note and "base" in head.note
    assert head.info.kind == "embedding"

    rev = pair_names(untied, tied)
    assert ("lm_head.weight", "lm_head.weight", "model.embed_tokens.weight") in rev
    (head,) = iter_pairs(untied, tied, names=["lm_head.weight"])
    assert "ft" in head.note
    # both tied: embed_tokens compared once, no lm_head entry
    both = pair_names(tied, Checkpoint(tied_path))
    assert all(n != "lm_head.weight" for n, _, _ in both)
    assert sum(n == "model.embed_tokens.weight" for n, _, _ in both) == 1
    # both untied: plain pair, no note
    pairs = {p.info.name: p for p in iter_pairs(untied, Checkpoint(untied_path))}
    assert pairs["lm_head.weight"].note == ""


# ---------------------------------------------------------------------- MoE layouts


def _fused_with_suffix(model, path):
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            k = k + ".weight"
        sd[k] = v.contiguous()
    path.mkdir()
    save_file(sd, str(path / "model.safetensors"))
    return path


def test_moe_fused_and_per_expert_layouts(tmp_path, reader_models):
    model, per_path = reader_models["qwen3_moe"]
    fused_path = save(model, tmp_path / "fused", save_original_format=False)
    suffix_path = _fused_with_suffix(model, tmp_path / "fused_suffix")
    # what transformers 5.23 writes: per-expert by default, fused [E, 2I, H] / [E, H, I] otherwise
    per_keys, fused_keys = stored_keys(per_path), stored_keys(fused_path)
    assert "model.layers.0.mlp.experts.3.gate_proj.weight" in per_keys
    assert not any(k.endswith("experts.gate_up_proj") for k in per_keys)
    assert {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"} <= fused_keys
    with safe_open(str(fused_path / "model.safetensors"), framework="pt") as h:
        assert h.get_slice("model.layers.0.mlp.experts.gate_up_proj").get_shape() == [
            N_EXPERTS,
            2 * MOE_I,
            32,
        ]
        assert h.get_slice("model.layers.0.mlp.experts.down_proj").get_shape() == [N_EXPERTS, 32, MOE_I]

    per, fused, suffix = Checkpoint(per_path), Checkpoint(fused_path), Checkpoint(suffix_path)
    assert per.names() == fused.names() == suffix.names()
    assert fused.shape("model.layers.1.mlp.experts.2.up_proj.weight") == (MOE_I, 32)
    assert fused.shape("model.layers.1.mlp.experts.2.down_proj.weight") == (32, MOE_I)
    assert (
        fused.stored_key("model.layers.1.mlp.experts.2.up_proj.weight")
        == "model.layers.1.mlp.experts.gate_up_proj"
    )
    assert_reads_model(fused, model)
    assert_reads_model(suffix, model)
    for other in (fused, suffix):
        n = 0
        for pair in iter_pairs(per, other, dtype=None):
            assert torch.equal(pair.base, pair.ft), pair.info.name
            n += 1
        assert n == len(per.names())
    t = fused.load("model.layers.0.mlp.experts.1.up_proj.weight")
    assert t.is_contiguous()

    # the split convention reproduces what the model computes for one expert
    experts = model.model.layers[0].mlp.experts
    torch.manual_seed(7)
    x = torch.randn(5, 32)
    for e in range(N_EXPERTS):
        with torch.no_grad():
            got = experts(x, torch.full((5, 1), e), torch.ones(5, 1))
        g, u, d = (
            fused.load(f"model.layers.0.mlp.experts.{e}.{p}_proj.weight") for p in ("gate", "up", "down")
        )
        manual = F.linear(F.silu(F.linear(x, g)) * F.linear(x, u), d)
        torch.testing.assert_close(got, manual, rtol=1e-5, atol=1e-6)

    # a fine-tuned fused checkpoint pairs with a per-expert base
    ft_model = build("qwen3_moe", seed=9)
    ft = Checkpoint(save(ft_model, tmp_path / "ft_fused", save_original_format=False))
    exp_ft = expected_tensors(ft_model)
    for pair in iter_pairs(per, ft, names=["model.layers.1.mlp.experts.3.gate_proj.weight"]):
        assert torch.equal(pair.ft, exp_ft[pair.info.name].to(torch.bfloat16))
        assert pair.info.kind == "expert" and pair.info.expert == 3 and pair.info.proj == "gate"


def test_unsupported_fused_layout_is_refused(tmp_path):
    d = tmp_path / "gptoss_like"
    d.mkdir()
    save_file(
        {
            "model.layers.0.mlp.experts.gate_up_proj": torch.zeros(4, 32, 2 * 16),  # [E, H, 2I]
            "model.layers.0.mlp.experts.down_proj": torch.zeros(4, 16, 32),  # [E, I, H]
        },
        str(d / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="gate_up_proj"):
        Checkpoint(d)


# ---------------------------------------------------------------------- mismatches


def test_mismatched_hidden_size(tmp_path, reader_models):
    _, base_path = reader_models["llama"]
    other = save(build("llama", hidden_size=48, head_dim=12), tmp_path / "wide")
    base, ft = Checkpoint(base_path, label="narrow"), Checkpoint(other, label="wide")
    with pytest.raises(CheckpointMismatch) as ei:
        pair_names(base, ft)
    msg = str(ei.value)
    assert "lm_head.weight" in msg and "[128, 32]" in msg and "[128, 48]" in msg
    assert "narrow" in msg and "wide" in msg
    with pytest.raises(CheckpointMismatch):  # validated when called, before any tensor is read
        iter_pairs(base, ft)


def _rewrite(src_path, dst, edit):
    dst.mkdir()
    sd = {}
    with safe_open(str(src_path / "model.safetensors"), framework="pt") as h:
        for k in h.keys():
            sd[k] = h.get_tensor(k)
    edit(sd)
    save_file(sd, str(dst / "model.safetensors"))
    shutil.copy(src_path / "config.json", dst / "config.json")
    return dst


def test_renamed_and_missing_tensor(tmp_path, reader_models):
    _, base_path = reader_models["qwen3"]
    old = "model.layers.1.self_attn.v_proj.weight"
    new = "model.layers.1.self_attn.value_proj.weight"
    renamed = _rewrite(base_path, tmp_path / "renamed", lambda sd: sd.__setitem__(new, sd.pop(old)))
    with pytest.raises(CheckpointMismatch) as ei:
        pair_names(Checkpoint(base_path, label="b"), Checkpoint(renamed, label="r"))
    assert old in str(ei.value) and new in str(ei.value)

    gone = "model.layers.0.mlp.up_proj.weight"
    missing = _rewrite(base_path, tmp_path / "missing", lambda sd: sd.pop(gone))
    with pytest.raises(CheckpointMismatch) as ei:
        list(iter_pairs(Checkpoint(base_path, label="b"), Checkpoint(missing, label="m")))
    assert gone in str(ei.value) and "ft 'm' lacks" in str(ei.value)
    with pytest.raises(CheckpointMismatch, match="base 'm' lacks"):
        pair_names(Checkpoint(missing, label="m"), Checkpoint(base_path, label="b"))

    # lm_head missing on a side that has no embed_tokens either: a plain mismatch
    no_embed = _rewrite(
        base_path,
        tmp_path / "no_embed",
        lambda sd: (sd.pop("lm_head.weight"), sd.pop("model.embed_tokens.weight")),
    )
    with pytest.raises(CheckpointMismatch, match="lm_head.weight"):
        pair_names(Checkpoint(no_embed), Checkpoint(base_path))


def test_names_subset_and_unknown(reader_models):
    _, path = reader_models["mistral"]
    a, b = Checkpoint(path), Checkpoint(path)
    want = ["model.norm.weight", "model.layers.0.self_attn.o_proj.weight"]
    got = [p.info.name for p in iter_pairs(a, b, names=want)]
    assert got == want
    with pytest.raises(CheckpointError, match="nope"):
        iter_pairs(a, b, names=["nope"])
    with pytest.raises(CheckpointError, match="nope"):
        a.load("nope")


# ---------------------------------------------------------------------- corruption


def test_missing_or_empty_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        Checkpoint(tmp_path / "empty")


def test_truncated_file(tmp_path, reader_models):
    _, src = reader_models["llama"]
    d = tmp_path / "trunc"
    shutil.copytree(src, d)
    f = d / "model.safetensors"
    os.truncate(f, f.stat().st_size - 100)
    with pytest.raises(CheckpointError, match="model.safetensors") as ei:
        Checkpoint(d, label="cut")
    assert "cut" in str(ei.value)
    assert type(ei.value.__cause__).__name__ == "SafetensorError"


def test_garbage_header(tmp_path, reader_models):
    _, src = reader_models["llama"]
    d = tmp_path / "garbage"
    shutil.copytree(src, d)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:40] = b"this is not JSON at all ........"
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Checkpoint(d)
    f.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Checkpoint(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        Checkpoint(d)


def test_corrupted_sharded_checkpoint(tmp_path, reader_models):
    model, _ = reader_models["qwen3"]
    src = save(model, tmp_path / "src", max_shard_size="20KB")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    wm = index["weight_map"]
    name, shard = next(iter(sorted(wm.items())))

    d1 = tmp_path / "missing_shard"
    shutil.copytree(src, d1)
    (d1 / shard).unlink()
    with pytest.raises(CheckpointError) as ei:
        Checkpoint(d1)
    assert shard in str(ei.value) and name in str(ei.value)

    d2 = tmp_path / "truncated_shard"
    shutil.copytree(src, d2)
    os.truncate(d2 / shard, (d2 / shard).stat().st_size // 2)
    with pytest.raises(CheckpointError, match=shard.replace(".", r"\.")):
        Checkpoint(d2)

    d3 = tmp_path / "wrong_index"
    shutil.copytree(src, d3)
    other = next(f for f in sorted(set(wm.values())) if f != shard)
    wm2 = dict(wm, **{name: other})
    (d3 / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm2}))
    with pytest.raises(CheckpointError) as ei:
        Checkpoint(d3)
    assert other in str(ei.value) and name in str(ei.value)

    d4 = tmp_path / "bad_index"
    shutil.copytree(src, d4)
    (d4 / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match="index"):
        Checkpoint(d4)


# ---------------------------------------------------------------------- readahead


@pytest.mark.parametrize("layout", ["sharded", "fused"])
def test_byte_span_holds_the_stored_tensor_and_prefetch_accepts_every_tensor(tmp_path, reader_models, layout):
    model, _ = reader_models["qwen3" if layout == "sharded" else "qwen3_moe"]
    if layout == "sharded":
        path = save(model, tmp_path / "m", max_shard_size="20KB")
    else:
        path = save(model, tmp_path / "m", save_original_format=False)
    ck = Checkpoint(path)
    for name in ck.names():
        file, offset, length = ck.byte_span(name)
        with open(file, "rb") as fh:  # the raw bytes at that span, not through safetensors
            fh.seek(offset)
            raw = fh.read(length)
        # what safetensors reads for this name: a fused expert is a slice of its fused tensor
        assert raw == ck.load(name).contiguous().view(torch.uint8).numpy().tobytes(), name
        ck.prefetch(name)
    # the readahead thread of iter_pairs changes nothing in what is read
    pairs_ahead = [(p.name, p.base) for p in iter_pairs(ck, ck, dtype=None, readahead=True)]
    pairs_plain = [(p.name, p.base) for p in iter_pairs(ck, ck, dtype=None, readahead=False)]
    assert [n for n, _ in pairs_ahead] == [n for n, _ in pairs_plain]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(pairs_ahead, pairs_plain))


def _rss_file_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise release is Linux-only")
def test_release_pages_returns_a_mapped_tensor_to_the_os_and_the_file_reads_back_intact(tmp_path):
    from offprincipal.checkpoints.reader import release_pages

    big = torch.randn(4096, 2048, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)  # 16 MiB
    (tmp_path / "m").mkdir()
    save_file({"model.layers.0.mlp.up_proj.weight": big}, str(tmp_path / "m" / "model.safetensors"))
    with Checkpoint(tmp_path / "m") as ck:
        w = ck.load("model.layers.0.mlp.up_proj.weight")
        assert torch.equal(w, big)  # touches every page of the mapping
        before = _rss_file_bytes()
        release_pages(w)
        after = _rss_file_bytes()
        assert before - after >= 15 * 2**20, (before, after)
        # the mapping is private and unmodified, so a new read gives the stored values
        assert torch.equal(ck.load("model.layers.0.mlp.up_proj.weight"), big)
