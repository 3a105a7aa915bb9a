"""Character-level tokenizer of the toy arithmetic language.

One token per character of ``CHARACTERS`` (digits, the operators ``+ - * %``, parentheses,
``=``, space, newline) plus the special tokens ``<pad> <s> </s> <unk>``. It is a
``tokenizers`` WordLevel model behind a pre-tokenizer that isolates every character, with a
``Fuse`` decoder (tokens are concatenated, no spaces inserted), wrapped as
``transformers.PreTrainedTokenizerFast`` so that ``save_pretrained`` writes real tokenizer
files and ``AutoTokenizer.from_pretrained`` loads them.

Prompt format: a sequence is ``prompt + completion + "</s>"`` with no BOS and no template
(``<s>`` exists but is never inserted: encoding with or without special tokens gives the same
ids, so pipelines that differ in ``add_special_tokens`` see the same inputs). The prompt is
the expression ending in ``=``; the completion is the worked solution or the bare answer.
Padding is on the left (generation-friendly); training collators pad as they need.
"""

from __future__ import annotations

import os

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
#: the characters of the language, one token each
CHARACTERS = "0123456789+-*%()= \n"
#: a conversational template for tools that want one: user turns verbatim, the assistant
#: turn followed by EOS; the generation prompt adds nothing
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
)
MODEL_MAX_LENGTH = 128


def vocabulary() -> dict[str, int]:
    tokens = list(SPECIAL_TOKENS) + list(CHARACTERS)
    return {tok: i for i, tok in enumerate(tokens)}


def build_tokenizer():
    """A fresh ``PreTrainedTokenizerFast`` for the toy language (deterministic ids)."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token=UNK))
    # every character its own pre-token ("." would skip newlines in Oniguruma)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(out_dir: str | os.PathLike):
    """Write the tokenizer files into ``out_dir`` (``save_pretrained``); return the tokenizer."""
    tok = build_tokenizer()
    tok.save_pretrained(str(out_dir))
    return tok


def load_tokenizer(path: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
