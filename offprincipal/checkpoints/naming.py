"""Classify a Hugging Face tensor name: decoder layer, module kind, projection, expert.

Covers the decoder-only families the pipeline reads (Qwen2/Qwen2.5, Qwen3, Qwen3-MoE,
Llama, Mistral; Mixtral's ``block_sparse_moe`` names; the ``model.language_model.``
prefix of multimodal wrappers). :func:`classify` never raises: a name it does not
recognise gets kind ``"other"`` (with its layer index when one can be read off).

Kinds and the meaning of ``proj``:

=============  ===========================================================================
kind           ``proj``
=============  ===========================================================================
q k v o        ``None``; ``"shared_expert"`` never occurs here
gate up down   ``None`` for a dense MLP; ``"shared_expert"`` for a MoE shared expert
expert         ``"gate" | "up" | "down"`` (``expert`` holds the index); a *stored* fused
               tensor (``mlp.experts.gate_up_proj``) gets ``"gate_up"``/``"down"`` and
               ``expert=None`` -- the reader never exposes those names
router         ``None`` (``mlp.gate.weight``); ``"shared_expert_gate"`` for Qwen2-MoE's gate
embedding      ``None`` (both ``embed_tokens`` and ``lm_head``; the name tells them apart)
norm           ``"input" | "post_attention" | "q_norm" | "k_norm" | "final" | ...``
bias           the projection the bias belongs to: ``"q" | "k" | "v" | "o" | "gate" | ...``
other          ``None``
=============  ===========================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MODULE_KINDS = (
    "q", "k", "v", "o", "gate", "up", "down",
    "expert", "router", "embedding", "norm", "bias", "other",
)  # fmt: skip

#: kinds whose weights are 2-D matrices (decided by kind, not by shape)
MATRIX_KINDS = frozenset(("q", "k", "v", "o", "gate", "up", "down", "expert", "router", "embedding"))


@dataclass(frozen=True)
class TensorInfo:
    name: str
    layer: int | None
    kind: str
    proj: str | None = None
    expert: int | None = None

    @property
    def is_matrix(self) -> bool:
        """True for 2-D weight kinds (q,k,v,o,gate,up,down,expert,router,embedding).

        A stored *fused* expert tensor (3-D, ``expert is None``) is not a matrix.
        """
        if self.kind == "expert" and self.expert is None:
            return False
        return self.kind in MATRIX_KINDS


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")
_ATTN_PROJ = re.compile(r"^(?:self_attn|attention|attn)\.(q|k|v|o)_proj\.(weight|bias)$")
_MLP_PROJ = re.compile(r"^(?:mlp|feed_forward)\.(gate|up|down)_proj\.(weight|bias)$")
_EXPERT = re.compile(r"^(?:mlp|block_sparse_moe|feed_forward)\.experts\.(\d+)\.(\w+?)(?:_proj)?\.weight$")
_FUSED = re.compile(r"^(?:mlp|block_sparse_moe|feed_forward)\.experts\.(gate_up|down)_proj(?:\.weight)?$")
_SHARED = re.compile(r"^(?:mlp|feed_forward)\.shared_experts?\.(gate|up|down)_proj\.(weight|bias)$")
_ROUTER = re.compile(r"^(?:mlp|block_sparse_moe|feed_forward)\.(?:gate|router)\.weight$")
_SHARED_GATE = re.compile(r"^(?:mlp|feed_forward)\.shared_expert_gate\.weight$")
_ATTN_NORM = re.compile(
    r"^(?:self_attn|attention|attn)\.(q_norm|k_norm|q_layernorm|k_layernorm)\.(?:weight|bias)$"
)
_LAYER_NORM = re.compile(r"^(\w*?)_?(?:layernorm|layer_norm|norm)\.(?:weight|bias)$")
_ANY_PROJ_BIAS = re.compile(r"(?:^|\.)(\w+?)_proj\.bias$")

# Mixtral's expert names: w1 = gate, w3 = up, w2 = down
_EXPERT_PROJ = {"gate": "gate", "up": "up", "down": "down", "w1": "gate", "w3": "up", "w2": "down"}


def classify(name: str) -> TensorInfo:
    """Classify one tensor name (see module docstring). Never raises."""
    m = _LAYER.search(name)
    if m is None:
        return _classify_global(name)
    layer = int(m.group(1))
    sub = m.group(2)

    if (a := _ATTN_PROJ.match(sub)) is not None:
        p, what = a.groups()
        return TensorInfo(name, layer, p) if what == "weight" else TensorInfo(name, layer, "bias", p)
    if (a := _MLP_PROJ.match(sub)) is not None:
        p, what = a.groups()
        return TensorInfo(name, layer, p) if what == "weight" else TensorInfo(name, layer, "bias", p)
    if (a := _EXPERT.match(sub)) is not None:
        e, p = a.groups()
        proj = _EXPERT_PROJ.get(p)
        if proj is not None:
            return TensorInfo(name, layer, "expert", proj, int(e))
        return TensorInfo(name, layer, "other")
    if (a := _FUSED.match(sub)) is not None:
        return TensorInfo(name, layer, "expert", a.group(1), None)
    if (a := _SHARED.match(sub)) is not None:
        p, what = a.groups()
        if what == "weight":
            return TensorInfo(name, layer, p, "shared_expert")
        return TensorInfo(name, layer, "bias", f"shared_expert.{p}")
    if _ROUTER.match(sub):
        return TensorInfo(name, layer, "router")
    if _SHARED_GATE.match(sub):
        return TensorInfo(name, layer, "router", "shared_expert_gate")
    if (a := _ATTN_NORM.match(sub)) is not None:
        return TensorInfo(name, layer, "norm", a.group(1).replace("layernorm", "norm"))
    if (a := _LAYER_NORM.match(sub)) is not None:
        return TensorInfo(name, layer, "norm", a.group(1) or "norm")
    if (a := _ANY_PROJ_BIAS.search(sub)) is not None:
        return TensorInfo(name, layer, "bias", a.group(1))
    return TensorInfo(name, layer, "other")


def _classify_global(name: str) -> TensorInfo:
    """Names outside the decoder blocks: embeddings, lm_head, final norm."""
    last = name.rsplit(".", 2)
    if name.endswith("embed_tokens.weight") or name.endswith("wte.weight"):
        return TensorInfo(name, None, "embedding")
    if name == "lm_head.weight" or name.endswith(".lm_head.weight"):
        return TensorInfo(name, None, "embedding")
    if len(last) >= 2 and last[-1] in ("weight", "bias") and last[-2] in ("norm", "final_layernorm", "ln_f"):
        return TensorInfo(name, None, "norm", "final")
    return TensorInfo(name, None, "other")
