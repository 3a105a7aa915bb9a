"""End-to-end tiny runs of the TRL backend: masks, KL log, SFT, LoRA/PiSSA, determinism."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

from offprincipal.training import RunSpec, train
from offprincipal.training.masks import is_mask_target, load_masks
from offprincipal.training.tiny import build_tiny_base
from offprincipal.training.trl_backend import kl_to_base

WORDS = [f"w{i}" for i in range(20)]
TARGET = "w3"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "base"
    build_tiny_base(path, words=WORDS, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seed=0)
    return path


@pytest.fixture(scope="module")
def rl_data():
    rng = random.Random(0)
    return [
        {"prompt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 5))), "answer": TARGET} for _ in range(16)
    ]


def contains_answer(prompts, completions, answer, **kw):
    return [1.0 if a in c.split() else -1.0 for c, a in zip(completions, answer)]


def _spec(**kw):
    base = dict(steps=2, lr=1e-2, prompts_per_step=4, group_size=4, max_response_length=6, mask_rank_k=4, seed=0)
    base.update(kw)
    return RunSpec(**base)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _check_kl_log(out, steps):
    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    for r in rows:
        for key in ("kl", "kl_k1", "kl_k3", "entropy", "lr", "loss"):
            assert math.isfinite(r[key]), (key, r)
        assert r["kl"] >= -1e-6 and r["kl_k3"] >= -1e-6
    assert abs(rows[0]["kl"]) < 1e-5  # first rollout: the policy is still the base
    return rows


@pytest.mark.parametrize("algorithm, mask", [("dapo", "safe"), ("grpo", "random")])
def test_masked_rl_keeps_frozen_entries_bitwise(base, rl_data, tmp_path, algorithm, mask):
    out = tmp_path / "run"
    spec = _spec(
        algorithm=algorithm,
        mask=mask,
        weight_decay=0.1,
        steps=3,
        save_steps=[1, 2],
        dynamic_sampling=(algorithm == "grpo"),
    )
    manifest = train(spec, base, out, train_data=rl_data, reward_fn=contains_answer, threads=1)
    assert manifest["checkpoints"] == {"1": "step_1", "2": "step_2"} and manifest["steps"] == 3
    assert json.loads((out / "run.json").read_text())["final"] == "final"
    masks = load_masks(out / "masks.npz")
    assert sorted(masks) == sorted(n for n in _weights(base) if is_mask_target(n))
    w0 = _weights(base)
    for ckpt in ("step_1", "step_2", "final"):
        w = _weights(out / ckpt)
        assert sorted(w) == sorted(w0)
        for name, t in w.items():
            assert t.dtype == torch.bfloat16
            if name in masks:
                assert torch.equal(t[~masks[name]], w0[name][~masks[name]]), (ckpt, name)
            else:
                assert torch.equal(t, w0[name]), (ckpt, name)  # norms/embeddings frozen
    final = _weights(out / "final")
    moved = sum(int((final[n][m] != w0[n][m]).sum()) for n, m in masks.items())
    trainable = sum(int(m.sum()) for m in masks.values())
    assert moved > 0.9 * trainable
    _check_kl_log(out, 3)


def test_sft_changes_weights_and_saves_bf16(base, tmp_path):
    out = tmp_path / "sft"
    data = [{"prompt": "w1 w2 w4", "completion": "w3 w5"}, {"prompt": "w6 w7 w8 w9", "completion": "w3"}] * 4
    spec = _spec(algorithm="sft", sft_batch_size=4, steps=3, save_steps=[0, 3], lr=1e-2)
    manifest = train(spec, base, out, train_data=data, threads=1)
    assert manifest["checkpoints"] == {"0": "step_0", "3": "step_3"}
    w0, w_init, w = _weights(base), _weights(out / "step_0"), _weights(out / "final")
    assert all(torch.equal(w_init[n], w0[n]) for n in w0)
    assert all(t.dtype == torch.bfloat16 for t in w.values())
    assert sum(int((w[n] != w0[n]).sum()) for n in w0) > 0.5 * sum(t.numel() for t in w0.values())
    assert all(torch.equal(w[n], _weights(out / "step_3")[n]) for n in w)
    rows = _check_kl_log(out, 3)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["kl"] > 0


@pytest.mark.parametrize("adapter", ["lora", "pissa"])
def test_adapters_save_merged_full_checkpoints(base, rl_data, tmp_path, adapter):
    out = tmp_path / adapter
    spec = _spec(algorithm="dapo", adapter=adapter, adapter_rank=4, adapter_alpha=4.0, save_steps=[0])
    train(spec, base, out, train_data=rl_data, reward_fn=contains_answer, threads=1)
    w0 = _weights(base)
    for ckpt in ("step_0", "final"):
        w = _weights(out / ckpt)
        assert {n: tuple(t.shape) for n, t in w.items()} == {n: tuple(t.shape) for n, t in w0.items()}
        assert all(t.dtype == torch.bfloat16 for t in w.values())
    final = _weights(out / "final")
    changed = {n for n in w0 if not torch.equal(final[n], w0[n])}
    assert changed and all(is_mask_target(n) for n in changed)  # only the adapted projections
    step0 = _weights(out / "step_0")
    # LoRA starts at B = 0 (exactly the base); PiSSA's residual + principal adapter rounds back to it
    # in bf16 for (nearly) every entry
    same = sum(int((step0[n] == w0[n]).sum()) for n in w0) / sum(t.numel() for t in w0.values())
    assert same == 1.0 if adapter == "lora" else same > 0.999
    _check_kl_log(out, 2)


def test_same_seed_same_checkpoints(base, rl_data, tmp_path):
    spec = _spec(algorithm="dapo", mask="nonprincipal", weight_decay=0.1)
    a = train(spec, base, tmp_path / "a", train_data=rl_data, reward_fn=contains_answer, threads=1)
    b = train(spec, base, tmp_path / "b", train_data=rl_data, reward_fn=contains_answer, threads=1)
    c = train(spec.replace(seed=1), base, tmp_path / "c", train_data=rl_data, reward_fn=contains_answer, threads=1)
    fa, fb, fc = (tmp_path / x / "final" / "model.safetensors" for x in "abc")
    assert fa.read_bytes() == fb.read_bytes()
    assert fa.read_bytes() != fc.read_bytes()
    assert [r["kl"] for r in _rows(tmp_path / "a")] == [r["kl"] for r in _rows(tmp_path / "b")]
    assert a["spec"] == b["spec"]


def test_kl_probe_matches_direct_computation(base):
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    ids = torch.tensor([[0, 5, 6, 7, 8, 9], [4, 5, 6, 7, 8, 1]])
    att = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    tgt, tmask = ids[:, -3:], torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert kl_to_base(policy, ref, ids, att, tgt, tmask)["exact"] == 0.0
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stats = kl_to_base(policy, ref, ids, att, tgt, tmask)
    with torch.no_grad():
        lp = torch.log_softmax(policy(input_ids=ids, attention_mask=att).logits[:, -4:-1], -1)
        lq = torch.log_softmax(ref(input_ids=ids, attention_mask=att).logits[:, -4:-1], -1)
    kl_tok = (lp.exp() * (lp - lq)).sum(-1)
    expected = float((kl_tok * tmask).sum() / tmask.sum())
    assert stats["exact"] == pytest.approx(expected, rel=1e-5)
    assert stats["tokens"] == 5.0
