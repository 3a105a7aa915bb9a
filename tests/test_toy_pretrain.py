"""Tests for the toy base pretraining: a real, loadable, deterministic HF checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from offprincipal.toy import task as T
from offprincipal.toy.pretrain import RECORD_NAME, WEIGHTS_NAME, pretrain_base

TINY = dict(hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=64,
            steps=6, batch_size=16, warmup_steps=2, lr=3e-3, threads=1, logging_steps=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("toypre")
    T.build_datasets(root / "data", seed=0, train_size=20, test_size=16, pretrain_size=400)
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        metrics = pretrain_base(root / name, root / "data", seed=seed, **TINY)
        runs[name] = (root / name, metrics)
    return root, runs


def test_checkpoint_layout_and_load(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, runs = tiny
    path, metrics = runs["a"]
    for f in ("config.json", "generation_config.json", WEIGHTS_NAME, "tokenizer.json", "tokenizer_config.json",
              RECORD_NAME):
        assert (path / f).is_file(), f
    assert not any(p.name.startswith(".") for p in path.parent.iterdir() if p.name.startswith(".a."))
    with safe_open(str(path / WEIGHTS_NAME), "pt") as fh:
        keys = list(fh.keys())
        assert keys and all(fh.get_tensor(k).dtype == torch.bfloat16 for k in keys)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "qwen3"
    assert cfg["num_attention_heads"] == 4 and cfg["num_key_value_heads"] == 2 and cfg["head_dim"] == 8
    assert cfg["num_hidden_layers"] == 4

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    assert model.dtype == torch.bfloat16  # loads in the stored dtype
    enc = tok(["(7+5)*3-4=", "1+2="], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[0] == 2 and out.shape[1] <= enc["input_ids"].shape[1] + 5

    record = json.loads((path / RECORD_NAME).read_text())
    assert record["recipe"]["seed"] == 1 and record["recipe"]["saved_dtype"] == "bfloat16"
    assert record["metrics"]["n_params"] == metrics["n_params"] > 0
    assert "eval" not in metrics  # the evaluation stage measures the base, like every checkpoint
    assert len(metrics["loss_curve"]) == 3
    assert set(metrics["spectral_shift"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}


def test_deterministic_given_seed(tiny):
    _, runs = tiny
    a = (runs["a"][0] / WEIGHTS_NAME).read_bytes()
    b = (runs["b"][0] / WEIGHTS_NAME).read_bytes()
    c = (runs["c"][0] / WEIGHTS_NAME).read_bytes()
    assert a == b
    assert a != c
    assert runs["a"][1]["loss_curve"] == runs["b"][1]["loss_curve"]


def test_default_recipe_has_headroom(tmp_path):
    """The real default recipe: a base between ~10% and ~60% pass@1 on the RL task."""
    T.build_datasets(tmp_path / "data", seed=0)
    metrics = pretrain_base(tmp_path / "base", tmp_path / "data", seed=0)
    from offprincipal.evaluation import evaluate

    task = f"toy:{T.RL_TASK}"
    suites = {"greedy": {"tasks": {task: {"k": 1}}, "temperature": 0.0},
              "sampled": {"tasks": {task: {"k": 4}}, "temperature": 1.0, "top_p": 1.0}}
    for name, suite in suites.items():
        result = evaluate(tmp_path / "base", suite={**suite, "max_gen_toks": 48, "chat_template": False, "limit": 256},
                          backend="hf", backend_args={"batch_size": 256}, result_path=tmp_path / f"{name}.json",
                          samples_path=tmp_path / f"{name}.jsonl.gz", provenance={}, datasets_dir=tmp_path / "data")
        rec = result["tasks"][task]
        assert rec["n_problems"] == 256
        assert 0.10 <= rec["scores"]["toy_verifier"]["avg_at_k"] <= 0.60, (name, rec["scores"]["toy_verifier"]["avg_at_k"])
    # geometry comes from training: the weights moved far from their initialisation and the
    # top of the spectrum grew well beyond that of a random matrix
    q = metrics["spectral_shift"]["q_proj"]
    assert q["rel_change"] > 0.5
    assert q["sigma1_over_mean_trained"] > 1.3 * q["sigma1_over_mean_init"]
    assert np.isfinite(metrics["final_loss"]) and metrics["final_loss"] < 1.3  # from ~3.1 at init


def test_packing_is_equivalent_to_separate_sequences():
    """A packed row gives each document the logits it gets alone (block-diagonal attention)."""
    from transformers import Qwen3ForCausalLM

    from offprincipal.toy.pretrain import PackCollator, make_config
    from offprincipal.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = make_config(tok, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                      intermediate_size=64)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).eval()
    model.config.use_cache = False
    docs = ["(7+5)*3-4=12*3-4=32</s>", "1+2=3</s>", "9%4=1</s>"]
    rows = [{"input_ids": tok(d)["input_ids"]} for d in docs]
    batch = PackCollator(tok.pad_token_id, row_len=64)(rows)
    assert batch["input_ids"].shape[0] == 1  # all three fit one row
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for r in rows:
            n = len(r["input_ids"])
            alone = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[start : start + n], alone, rtol=1e-4, atol=1e-5)
            # the first token of each document is never a training target
            assert batch["labels"][0, start] == -100
            assert batch["labels"][0, start + 1 : start + n].tolist() == r["input_ids"][1:]
            start += n
    small = PackCollator(tok.pad_token_id, row_len=20)(rows)
    assert small["input_ids"].shape[0] == 2 and (small["labels"][:, :] != -100).sum() == sum(
        len(r["input_ids"]) - 1 for r in rows
    )
