"""Tests for offprincipal.checkpoints.naming.classify."""

from __future__ import annotations

import pytest
import torch

from offprincipal.checkpoints.naming import MODULE_KINDS, TensorInfo, classify

L = "model.layers.{}."

CASES = [
    # name, layer, kind, proj, expert, is_matrix
    ("model.embed_tokens.weight", None, "embedding", None, None, True),
    ("lm_head.weight", None, "embedding", None, None, True),
    ("model.norm.weight", None, "norm", "final", None, False),
    ("model.layers.0.self_attn.q_proj.weight", 0, "q", None, None, True),
    ("model.layers.3.self_attn.k_proj.weight", 3, "k", None, None, True),
    ("model.layers.11.self_attn.v_proj.weight", 11, "v", None, None, True),
    ("model.layers.27.self_attn.o_proj.weight", 27, "o", None, None, True),
    ("model.layers.1.self_attn.q_proj.bias", 1, "bias", "q", None, False),
    ("model.layers.1.self_attn.k_proj.bias", 1, "bias", "k", None, False),
    ("model.layers.1.self_attn.v_proj.bias", 1, "bias", "v", None, False),
    ("model.layers.2.self_attn.q_norm.weight", 2, "norm", "q_norm", None, False),
    ("model.layers.2.self_attn.k_norm.weight", 2, "norm", "k_norm", None, False),
    ("model.layers.0.input_layernorm.weight", 0, "norm", "input", None, False),
    ("model.layers.0.post_attention_layernorm.weight", 0, "norm", "post_attention", None, False),
    ("model.layers.5.mlp.gate_proj.weight", 5, "gate", None, None, True),
    ("model.layers.5.mlp.up_proj.weight", 5, "up", None, None, True),
    ("model.layers.5.mlp.down_proj.weight", 5, "down", None, None, True),
    ("model.layers.5.mlp.down_proj.bias", 5, "bias", "down", None, False),
    # Qwen3-MoE
    ("model.layers.4.mlp.gate.weight", 4, "router", None, None, True),
    ("model.layers.4.mlp.experts.17.gate_proj.weight", 4, "expert", "gate", 17, True),
    ("model.layers.4.mlp.experts.0.up_proj.weight", 4, "expert", "up", 0, True),
    ("model.layers.47.mlp.experts.127.down_proj.weight", 47, "expert", "down", 127, True),
    ("model.layers.4.mlp.experts.gate_up_proj", 4, "expert", "gate_up", None, False),
    ("model.layers.4.mlp.experts.down_proj.weight", 4, "expert", "down", None, False),
    # Qwen2-MoE shared expert
    ("model.layers.2.mlp.shared_expert.gate_proj.weight", 2, "gate", "shared_expert", None, True),
    ("model.layers.2.mlp.shared_expert.down_proj.weight", 2, "down", "shared_expert", None, True),
    ("model.layers.2.mlp.shared_expert_gate.weight", 2, "router", "shared_expert_gate", None, True),
    # Mixtral
    ("model.layers.1.block_sparse_moe.gate.weight", 1, "router", None, None, True),
    ("model.layers.1.block_sparse_moe.experts.6.w1.weight", 1, "expert", "gate", 6, True),
    ("model.layers.1.block_sparse_moe.experts.6.w3.weight", 1, "expert", "up", 6, True),
    ("model.layers.1.block_sparse_moe.experts.6.w2.weight", 1, "expert", "down", 6, True),
    # multimodal prefix
    ("model.language_model.layers.9.self_attn.o_proj.weight", 9, "o", None, None, True),
    ("model.language_model.embed_tokens.weight", None, "embedding", None, None, True),
    ("model.language_model.norm.weight", None, "norm", "final", None, False),
    # unknown
    ("model.layers.0.self_attn.rotary_emb.inv_freq", 0, "other", None, None, False),
    ("visual.blocks.0.attn.qkv.weight", None, "other", None, None, False),
    ("", None, "other", None, None, False),
    ("layers", None, "other", None, None, False),
    ("model.layers.x.self_attn.q_proj.weight", None, "other", None, None, False),
]


@pytest.mark.parametrize("name,layer,kind,proj,expert,is_matrix", CASES)
def test_classify_table(name, layer, kind, proj, expert, is_matrix):
    info = classify(name)
    assert info == TensorInfo(name, layer, kind, proj, expert)
    assert info.kind in MODULE_KINDS
    assert info.is_matrix is is_matrix


def test_frozen():
    info = classify("model.layers.0.mlp.up_proj.weight")
    with pytest.raises(AttributeError):
        info.kind = "down"  # type: ignore[misc]
    assert hash(info) == hash(classify("model.layers.0.mlp.up_proj.weight"))


@pytest.mark.parametrize(
    "junk", ["..", "model..layers..0", "a" * 500, "model.layers.-1.mlp.gate.weight", "ünï.cödé"]
)
def test_never_raises(junk):
    assert classify(junk).kind in MODULE_KINDS


TINY = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
)


@pytest.mark.parametrize(
    "cfg_name,model_name,extra",
    [
        ("Qwen2Config", "Qwen2ForCausalLM", {}),
        ("Qwen3Config", "Qwen3ForCausalLM", {}),
        ("LlamaConfig", "LlamaForCausalLM", {}),
        ("MistralConfig", "MistralForCausalLM", {}),
        (
            "Qwen3MoeConfig",
            "Qwen3MoeForCausalLM",
            dict(moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2),
        ),
    ],
)
def test_real_model_names(cfg_name, model_name, extra):
    """Every parameter of a real (tiny) model classifies, and its shape agrees with the kind."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, cfg_name)(**TINY, **extra))
    seen = set()
    for name, t in model.state_dict().items():
        info = classify(name)
        assert info.kind != "other", name
        seen.add(info.kind)
        if info.is_matrix:
            assert t.dim() == 2, name
        elif info.kind in ("norm", "bias"):
            assert t.dim() == 1, name
        if info.layer is not None:
            assert 0 <= info.layer < TINY["num_hidden_layers"]
        if info.kind == "bias":
            assert info.proj in ("q", "k", "v")
    assert {"q", "k", "v", "o", "embedding", "norm"} <= seen
    if cfg_name == "Qwen3MoeConfig":
        assert "router" in seen and "expert" in seen  # fused 3-D tensors, expert=None
        assert "gate" not in seen
    else:
        assert {"gate", "up", "down"} <= seen
    if cfg_name == "Qwen2Config":
        assert "bias" in seen
