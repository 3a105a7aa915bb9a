"""Backend model arguments and the context budget, checked without a GPU and without vllm."""

import importlib.util
import json
import sys

import pytest

from offprincipal.evaluation import backends, with_defaults
from offprincipal.evaluation.suites import generation_kwargs, task_config


def _checkpoint(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_vllm_args_for_the_paper_run(tmp_path):
    ckpt = _checkpoint(tmp_path, max_position_embeddings=131072)
    suite = with_defaults({})
    context = backends.context_length(412, suite["max_gen_toks"], backends.max_positions(ckpt), checkpoint="r1")
    assert context == 412 + 32768
    args = backends.vllm_model_args(ckpt, max_model_len=context, seed=suite["seed"],
                                    backend_args={"tensor_parallel_size": 2, "data_parallel_size": 4,
                                                  "gpu_memory_utilization": 0.85,
                                                  "engine_kwargs": {"enforce_eager": True}})
    assert args == {"pretrained": str(ckpt.resolve()), "dtype": "bfloat16", "tensor_parallel_size": 2,
                    "data_parallel_size": 4, "gpu_memory_utilization": 0.85, "seed": 1234,
                    "max_model_len": 33180, "batch_size": "auto", "enforce_eager": True}
    # the seed is the engine's; no task's generation kwargs carry one (it would make repeats identical)
    for task, entry in suite["tasks"].items():
        assert "seed" not in task_config(task, entry, suite)["generation_kwargs"]
    assert "seed" not in generation_kwargs(suite)


def test_vllm_args_defaults_and_errors(tmp_path):
    args = backends.vllm_model_args(tmp_path, max_model_len=1000, seed=7)
    assert (args["tensor_parallel_size"], args["data_parallel_size"], args["gpu_memory_utilization"]) == (1, 1, 0.9)
    assert args["seed"] == 7 and args["max_model_len"] == 1000
    with pytest.raises(ValueError, match="tensor_parallel_size must be a positive integer"):
        backends.vllm_model_args(tmp_path, max_model_len=10, seed=0, backend_args={"tensor_parallel_size": 0})
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        backends.vllm_model_args(tmp_path, max_model_len=10, seed=0, backend_args={"gpu_memory_utilization": 1.5})
    with pytest.raises(ValueError, match="unknown backend_args \\['tp'\\]"):
        backends.vllm_model_args(tmp_path, max_model_len=10, seed=0, backend_args={"tp": 2})
    with pytest.raises(ValueError, match="engine_kwargs repeats \\['seed'\\]"):
        backends.vllm_model_args(tmp_path, max_model_len=10, seed=0, backend_args={"engine_kwargs": {"seed": 1}})


def test_building_args_never_imports_vllm(tmp_path):
    backends.model_args("vllm", tmp_path, context=100, seed=0)
    assert "vllm" not in sys.modules
    if importlib.util.find_spec("vllm") is None:  # here: vllm is not installed at all
        with pytest.raises(ModuleNotFoundError):
            backends.build_lm("vllm", {"pretrained": str(tmp_path)})


def test_budget_must_fit_the_checkpoint(tmp_path):
    # Qwen2.5-Math-1.5B has 4096 positions: a 32k budget cannot fit, and the error says what would
    ckpt = _checkpoint(tmp_path, max_position_embeddings=4096)
    with pytest.raises(backends.BudgetError, match="checkpoint qwen-math.*1000 tokens.*32768.*at most 3096"):
        backends.context_length(1000, 32768, backends.max_positions(ckpt), checkpoint="qwen-math")
    assert backends.context_length(1000, 3096, 4096) == 4096


def test_max_positions_reads_nested_text_config(tmp_path):
    assert backends.max_positions(_checkpoint(tmp_path, text_config={"max_position_embeddings": 8192})) == 8192
    with pytest.raises(ValueError, match="no max_position_embeddings"):
        backends.max_positions(_checkpoint(tmp_path, hidden_size=4))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        backends.max_positions(tmp_path / "missing")


def test_hf_args(tmp_path):
    args = backends.model_args("hf", tmp_path, context=300, seed=0, backend_args={"batch_size": 16})
    assert args == {"pretrained": str(tmp_path.resolve()), "device": "cpu", "dtype": "float32", "batch_size": 16,
                    "max_length": 300}
    with pytest.raises(ValueError, match="unknown backend_args"):
        backends.hf_model_args(tmp_path, max_length=10, backend_args={"tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        backends.model_args("tgi", tmp_path, context=10, seed=0)


def test_truncation_flags_from_the_engines_output():
    from types import SimpleNamespace

    from offprincipal.evaluation.finish import (
        FinishLog,
        hf_truncated,
        record_vllm_outputs,
    )

    eos = {2, 7}
    assert hf_truncated([5, 6, 5, 6], budget=4, eos_ids=eos)        # budget reached, no EOS
    assert not hf_truncated([5, 7, 0, 0], budget=4, eos_ids=eos)    # EOS, then padding
    assert not hf_truncated([5, 6], budget=4, eos_ids=eos)          # batch stopped early: all rows ended
    # vLLM: finish_reason "length" is the budget; the key is the text as lm-eval post-processes it
    out = lambda text, reason: SimpleNamespace(outputs=[SimpleNamespace(text=text, finish_reason=reason)])  # noqa: E731
    params = [SimpleNamespace(stop=["<|im_end|>"])] * 3
    log = FinishLog()
    record_vllm_outputs([out("a \\boxed{1}", "stop"), out("long...", "length"), out("x<|im_end|>tail", "stop")],
                        params, log)
    assert (log.pop("a \\boxed{1}"), log.pop("long..."), log.pop("x")) == (False, True, False)
    with pytest.raises(KeyError, match="no generation record"):
        log.pop("long...")


def test_hf_backend_ignores_the_checkpoints_sampling_defaults(tmp_path):
    # a checkpoint's generation_config.json (Qwen ships top_k 20, repetition_penalty 1.05) must not
    # change what the hf backend samples: only the suite's settings apply, as with vLLM
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from offprincipal.evaluation.finish import recording_hflm
    from offprincipal.training.tiny import word_tokenizer

    tok = word_tokenizer(["a", "b"])
    tok.save_pretrained(tmp_path)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config = GenerationConfig(do_sample=True, top_k=20, repetition_penalty=1.05, temperature=0.6,
                                               top_p=0.95, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(tmp_path)
    lm = recording_hflm()(pretrained=str(tmp_path), device="cpu", dtype="float32", batch_size=2, max_length=64)
    gen = lm.model.generation_config
    assert (gen.do_sample, gen.top_k, gen.repetition_penalty, gen.temperature, gen.top_p) == (None,) * 5
    assert gen.eos_token_id == tok.eos_token_id and gen.pad_token_id == tok.pad_token_id
    assert next(lm.model.parameters()).dtype == torch.float32  # computing in fp32 on the stored bf16 values
