"""Model arguments of the two lm-eval backends, the context budget, and building the model.

``hf``: ``lm_eval.models.huggingface.HFLM`` on the CPU, computing in float32 on the stored
(bf16) values, which float32 represents exactly. ``vllm``:
``lm_eval.models.vllm_causallms.VLLM`` in bfloat16 with tensor / data parallelism from the
caller. The argument builders are pure functions (no model, no GPU, no vllm import); vllm is
imported only by :func:`build_lm`.

Context budget: the prompt must never be truncated (lm-eval left-truncates silently when
prompt + ``max_gen_toks`` exceeds the model length), so the model length is set to the
longest rendered prompt plus the generation budget, and that must fit the checkpoint's
``max_position_embeddings``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BACKENDS = ("hf", "vllm")

_HF_KEYS = {"batch_size", "device", "dtype"}
_VLLM_KEYS = {"tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "dtype", "batch_size",
              "max_num_seqs", "engine_kwargs"}


class BudgetError(ValueError):
    """Prompt plus generation budget does not fit the checkpoint's context."""


def max_positions(checkpoint_dir: str | os.PathLike) -> int:
    """``max_position_embeddings`` of a checkpoint's ``config.json`` (or of its ``text_config``)."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_dir}: no config.json")
    cfg = json.loads(path.read_text())
    for section in (cfg, cfg.get("text_config") or {}):
        if isinstance(section.get("max_position_embeddings"), int):
            return section["max_position_embeddings"]
    raise ValueError(f"checkpoint {checkpoint_dir}: config.json has no max_position_embeddings")


def context_length(longest_prompt_tokens: int, max_gen_toks: int, positions: int, *, checkpoint: str = "") -> int:
    """The model length to run with: longest prompt + budget, checked against ``positions``."""
    needed = int(longest_prompt_tokens) + int(max_gen_toks)
    if needed > positions:
        raise BudgetError(
            f"checkpoint {checkpoint}: the longest prompt ({longest_prompt_tokens} tokens) plus max_gen_toks "
            f"({max_gen_toks}) needs {needed} positions, but max_position_embeddings is {positions}; lower the "
            f"suite's max_gen_toks to at most {positions - longest_prompt_tokens}")
    return needed


def _check_keys(backend: str, backend_args: dict, allowed: set) -> None:
    unknown = set(backend_args) - allowed
    if unknown:
        raise ValueError(f"backend {backend!r}: unknown backend_args {sorted(unknown)} (allowed: {sorted(allowed)})")


def hf_model_args(checkpoint_dir, *, max_length: int, backend_args: dict | None = None) -> dict:
    """``HFLM`` keyword arguments: CPU, float32, the given model length, the batch size."""
    args = dict(backend_args or {})
    _check_keys("hf", args, _HF_KEYS)
    batch_size = args.get("batch_size", 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"backend 'hf': batch_size must be a positive integer, got {batch_size!r}")
    return {
        "pretrained": str(Path(checkpoint_dir).resolve()),
        "device": args.get("device", "cpu"),
        "dtype": args.get("dtype", "float32"),
        "batch_size": batch_size,
        "max_length": int(max_length),
    }


def vllm_model_args(checkpoint_dir, *, max_model_len: int, seed: int, backend_args: dict | None = None) -> dict:
    """``VLLM`` keyword arguments: bfloat16, the engine seed, TP / DP, memory share, model length.

    The seed goes here (vLLM's engine seed), never into the generation kwargs: a per-request
    seed makes every repeat of a problem identical. ``engine_kwargs`` pass straight to
    ``vllm.LLM`` (e.g. ``enforce_eager``).
    """
    args = dict(backend_args or {})
    _check_keys("vllm", args, _VLLM_KEYS)
    tp = args.get("tensor_parallel_size", 1)
    dp = args.get("data_parallel_size", 1)
    for key, value in (("tensor_parallel_size", tp), ("data_parallel_size", dp)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"backend 'vllm': {key} must be a positive integer, got {value!r}")
    mem = args.get("gpu_memory_utilization", 0.9)
    if not isinstance(mem, (int, float)) or isinstance(mem, bool) or not 0 < mem <= 1:
        raise ValueError(f"backend 'vllm': gpu_memory_utilization must lie in (0, 1], got {mem!r}")
    out = {
        "pretrained": str(Path(checkpoint_dir).resolve()),
        "dtype": args.get("dtype", "bfloat16"),
        "tensor_parallel_size": tp,
        "data_parallel_size": dp,
        "gpu_memory_utilization": float(mem),
        "seed": int(seed),
        "max_model_len": int(max_model_len),
        # one generate call over all requests lets vLLM schedule them (a fixed small batch is slow)
        "batch_size": args.get("batch_size", "auto"),
    }
    if "max_num_seqs" in args:
        out["max_num_seqs"] = int(args["max_num_seqs"])
    engine = args.get("engine_kwargs") or {}
    if not isinstance(engine, dict):
        raise ValueError(f"backend 'vllm': engine_kwargs must be a mapping, got {engine!r}")
    clash = set(engine) & set(out)
    if clash:
        raise ValueError(f"backend 'vllm': engine_kwargs repeats {sorted(clash)}; set them as backend_args")
    out.update(engine)
    return out


def model_args(backend: str, checkpoint_dir, *, context: int, seed: int, backend_args: dict | None = None) -> dict:
    if backend == "hf":
        return hf_model_args(checkpoint_dir, max_length=context, backend_args=backend_args)
    if backend == "vllm":
        return vllm_model_args(checkpoint_dir, max_model_len=context, seed=seed, backend_args=backend_args)
    raise ValueError(f"unknown backend {backend!r}; known: {list(BACKENDS)}")


def build_lm(backend: str, args: dict):
    """The lm-eval model object of a backend, recording which responses hit the budget
    (:mod:`offprincipal.evaluation.finish`); vllm is imported only here."""
    from offprincipal.evaluation import finish

    if backend == "hf":
        return finish.recording_hflm()(**args)
    if backend == "vllm":
        return finish.recording_vllm()(**args)
    raise ValueError(f"unknown backend {backend!r}; known: {list(BACKENDS)}")
