"""A tiny random Qwen3 with a word-level tokenizer, in HF layout (tests and timing).

Not a trained model: transformers' random init, saved bf16 like a released base. The
tokenizer splits on whitespace and knows ``<pad>``, ``<eos>``, ``<unk>`` plus the given
words, so toy prompts such as ``"a b c"`` are three tokens.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from offprincipal.io import atomic_dir

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")


def word_tokenizer(words: Sequence[str]):
    """A ``PreTrainedTokenizerFast`` over ``<pad> <eos> <unk>`` + ``words`` (ids in that order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *words])}
    if len(vocab) != len(SPECIAL_TOKENS) + len(words):
        raise ValueError("words must be unique and distinct from the special tokens")
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def build_tiny_base(
    out_dir: str | os.PathLike,
    *,
    words: Sequence[str],
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
) -> None:
    """Write a random tiny ``Qwen3ForCausalLM`` + tokenizer to ``out_dir`` (atomically)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = word_tokenizer(words)
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(dtype)
    model.config.dtype = dtype
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
