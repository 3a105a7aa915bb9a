"""The toy world: a synthetic arithmetic task family and a small, really pretrained base.

* :mod:`offprincipal.toy.task` -- problems (``prompt``/``answer``/worked ``solution``), the
  ±1 verifier, and disjoint train/held-out/pretraining datasets as JSONL
  (:func:`build_datasets`).
* :mod:`offprincipal.toy.tokenizer` -- a character-level tokenizer saved as real Hugging Face
  tokenizer files.
* :mod:`offprincipal.toy.pretrain` -- pretrain a grouped-query-attention Qwen3 on the mixture
  and save it as a bf16 Hugging Face checkpoint (:func:`pretrain_base`). Accuracy is the
  evaluation stage's (:mod:`offprincipal.evaluation`), as for every checkpoint.
"""

from offprincipal.toy.pretrain import (
    DEFAULT_RECIPE,
    RECORD_NAME,
    pretrain_base,
)
from offprincipal.toy.task import (
    ALL_TASKS,
    EOS_TEXT,
    FAMILIES,
    RL_TASK,
    build_datasets,
    extract_answer,
    is_correct,
    load_pretrain,
    load_split,
    make_problem,
    reward,
    reward_func,
)
from offprincipal.toy.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer

__all__ = [
    "ALL_TASKS",
    "DEFAULT_RECIPE",
    "EOS_TEXT",
    "FAMILIES",
    "RECORD_NAME",
    "RL_TASK",
    "build_datasets",
    "build_tokenizer",
    "extract_answer",
    "is_correct",
    "load_pretrain",
    "load_split",
    "load_tokenizer",
    "make_problem",
    "pretrain_base",
    "reward",
    "reward_func",
    "save_tokenizer",
]
