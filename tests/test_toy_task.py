"""Tests for the toy arithmetic task, its verifier, datasets and tokenizer.

Answers are checked against Python's own ``eval`` of the expression (independent of the
module's evaluator); worked-solution steps are each checked the same way.
"""

from __future__ import annotations

import json
import random

import pytest

from offprincipal.toy import task as T
from offprincipal.toy.tokenizer import EOS, build_tokenizer, save_tokenizer

SMALL = dict(train_size=60, test_size=40, pretrain_size=3000)


def _py_eval(expr: str) -> int:
    assert set(expr) <= set("0123456789+-*%() "), expr
    return eval(expr, {"__builtins__": {}}, {})  # noqa: S307 (digits and operators only)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    out = tmp_path_factory.mktemp("toyds")
    manifest = T.build_datasets(out, seed=3, **SMALL)
    return out, manifest


@pytest.mark.parametrize("task", T.ALL_TASKS)
def test_answers_and_steps_match_python_eval(task):
    fam, d = T.parse_task(task)
    rng = random.Random(7)
    for _ in range(200):
        p = T.sample_problem(rng, fam, d)
        expr = p["prompt"][:-1]
        assert p["prompt"].endswith("=")
        assert int(p["answer"]) == _py_eval(expr)
        assert 0 <= int(p["answer"]) <= T.MAX_VALUE
        steps = p["solution"].split("=")
        assert steps[-1] == p["answer"]
        for step in steps:  # every step is an equivalent expression, with no negative numbers
            assert _py_eval(step) == _py_eval(expr)
            assert not step.startswith("-") and "--" not in step
        # number of operations is the difficulty; the family's required operator appears
        assert sum(expr.count(op) for op in "+-*%") == d
        if T.FAMILIES[fam].required:
            assert T.FAMILIES[fam].required in expr
        assert set(expr) - set("0123456789()") <= set(T.FAMILIES[fam].ops)


def test_evaluator_follows_python_precedence():
    for expr in ["2+3*4", "(2+3)*4", "10-4-3", "10-(4-3)", "7*8%5", "7*(8%5)", "100%7%3", "2*3+4*5",
                 "((1+2))*(3+4)", "9-2*3+1", "17%5*3"]:
        assert T.evaluate(expr) == _py_eval(expr), expr
        assert _py_eval(T.render(T.parse(expr))) == _py_eval(expr)
    with pytest.raises(ValueError):
        T.parse("2+")
    with pytest.raises(ValueError):
        T.parse("(2+3")
    with pytest.raises(ValueError):
        T.parse("2 x 3")


def test_worked_solution_example():
    p = T.make_problem("(7+5)*3-4")
    assert p["prompt"] == "(7+5)*3-4="
    assert p["solution"] == "12*3-4=36-4=32"
    assert p["answer"] == "32"
    assert T.make_problem("2*3+4*5")["solution"] == "6+20=26"  # independent ops reduce together
    assert T.make_problem("42")["solution"] == "42"


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("32", "32"),
        ("12*3-4=36-4=32", "32"),
        (" 32 ", "32"),
        ("32</s>", "32"),
        ("32</s>garbage=7", "32"),
        ("36-4=32\n=99", "32"),
        ("032", "32"),
        ("-5", "-5"),
        ("12*3-4=36-4=", None),
        ("", None),
        ("32abc", None),
        ("3 2", None),
        ("36-4", None),
        ("=", None),
        ("</s>32", None),
    ],
)
def test_extract_answer_edge_cases(completion, expected):
    assert T.extract_answer(completion) == expected


def test_reward_is_plus_minus_one():
    p = T.make_problem("(7+5)*3-4")
    assert T.reward(p, "12*3-4=36-4=32") == 1.0
    assert T.reward(p, "32") == 1.0
    assert T.reward(p["prompt"], "32</s>") == 1.0  # bare prompt: answer recomputed
    assert T.reward(p, "31") == -1.0
    assert T.reward(p, "12*3-4=36-4=31") == -1.0
    assert T.reward(p, "32=31") == -1.0  # the LAST '=' segment counts
    assert T.reward(p, "") == -1.0
    assert T.is_correct(p, "32") and not T.is_correct(p, "33")
    assert set(T.reward(p, c) for c in ["x", "32", "7", "36-4=32"]) == {1.0, -1.0}
    assert T.reward_func(["32", "31"], answer=["32", "32"]) == [1.0, -1.0]
    assert T.reward_func(["32", "31"], prompts=[p["prompt"]] * 2) == [1.0, -1.0]
    assert T.reward_func([[{"role": "assistant", "content": "32"}]], answer=["32"]) == [1.0]


def test_datasets_disjoint_and_consistent(datasets):
    out, manifest = datasets
    seen: dict[str, str] = {}
    for task in manifest["tasks"]:
        for split in ("train", "test"):
            rows = T.load_split(out, task, split)
            assert len(rows) == manifest["splits"][f"{task}/{split}"]["n"]
            for r in rows:
                assert r["task"] == task and T.task_name(r["family"], r["difficulty"]) == task
                assert int(r["answer"]) == _py_eval(r["prompt"][:-1])
                assert r["prompt"] not in seen, (r["prompt"], seen.get(r["prompt"]), f"{task}/{split}")
                seen[r["prompt"]] = f"{task}/{split}"
    # the RL task's held-out set is full size
    assert manifest["splits"][f"{manifest['rl_task']}/test"]["n"] == SMALL["test_size"]
    assert manifest["splits"][f"{manifest['rl_task']}/train"]["n"] == SMALL["train_size"]
    pre = T.load_pretrain(out)
    assert len(pre) == manifest["pretrain"]["n"] == SMALL["pretrain_size"]
    for d in pre:
        assert d["prompt"] not in seen  # no split problem (held-out or train) is pretrained on
        assert d["text"] in (d["prompt"] + d["solution"] + EOS, d["prompt"] + d["answer"] + EOS)
        if d["difficulty"] > T.ANSWER_ONLY_MAX_DIFFICULTY:
            assert d["text"] == d["prompt"] + d["solution"] + EOS
        assert T.is_correct(d, d["text"][len(d["prompt"]):])
    assert set(manifest["pretrain"]["by_task"]) <= set(manifest["pretrain"]["mixture"])
    bare = [d for d in pre if d["difficulty"] == 2 and d["solution"] != d["answer"]]
    share = sum(d["text"] == d["prompt"] + d["answer"] + EOS for d in bare) / len(bare)
    assert abs(share - T.DEFAULT_ANSWER_ONLY_FRACTION) < 0.08
    on_disk = json.loads((out / T.MANIFEST_NAME).read_text())
    assert on_disk == json.loads(json.dumps(manifest))


def test_small_task_spaces_are_split_not_exhausted(datasets):
    out, manifest = datasets
    for fam in T.FAMILIES:
        pool = T.pool_size(fam, 1)
        for split in ("train", "test"):
            assert manifest["splits"][f"{fam}_d1/{split}"]["n"] <= max(pool // 4, 1)


def test_datasets_deterministic(tmp_path, datasets):
    out, _ = datasets
    T.build_datasets(tmp_path, seed=3, **SMALL)
    for rel in ["pretrain.jsonl", "mul_mix_d3/test.jsonl", "add_sub_d2/train.jsonl", "manifest.json"]:
        assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes()
    other = tmp_path / "seed4"
    T.build_datasets(other, seed=4, **SMALL)
    assert (other / "mul_mix_d3/test.jsonl").read_bytes() != (out / "mul_mix_d3/test.jsonl").read_bytes()


def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tok) == len(build_tokenizer()) == 23
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert tok.padding_side == "left"
    rng = random.Random(0)
    for task in T.ALL_TASKS:
        fam, d = T.parse_task(task)
        for _ in range(20):
            p = T.sample_problem(rng, fam, d)
            text = p["prompt"] + p["solution"] + EOS
            ids = tok(text)["input_ids"]
            assert ids == tok(text, add_special_tokens=False)["input_ids"]  # no BOS inserted
            assert len(ids) == len(p["prompt"]) + len(p["solution"]) + 1  # one token per char
            assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
            assert tok.decode(ids) == text
            assert tok.decode(ids, skip_special_tokens=True) == p["prompt"] + p["solution"]
    batch = tok(["1+2=", "(3*4)-5="], padding=True)
    assert batch["input_ids"][0][:4] == [tok.pad_token_id] * 4
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "3"}], tokenize=False
    )
    assert chat == "1+2=3</s>"


def test_a_larger_held_out_split_for_one_task_keeps_the_others_and_stays_disjoint(tmp_path):
    from offprincipal.toy.task import build_datasets, load_pretrain, load_split

    kw = dict(seed=0, tasks=["mul_mix_d3", "add_sub_d2"], train_size=40, test_size=30, pretrain_size=300,
              pretrain_mixture={"mul_mix_d3": 0.5, "add_sub_d2": 0.5})
    build_datasets(tmp_path / "a", **kw)
    build_datasets(tmp_path / "b", test_sizes={"mul_mix_d3": 120}, **kw)
    small, large = load_split(tmp_path / "a", "mul_mix_d3", "test"), load_split(tmp_path / "b", "mul_mix_d3", "test")
    assert len(large) == 120 and large[:30] == small  # the first problems are the old held-out set
    assert load_split(tmp_path / "a", "add_sub_d2", "test") == load_split(tmp_path / "b", "add_sub_d2", "test")
    held_out = {p["prompt"] for p in large}
    others = [p["prompt"] for t in ("mul_mix_d3", "add_sub_d2") for p in load_split(tmp_path / "b", t, "train")]
    others += [d["prompt"] for d in load_pretrain(tmp_path / "b")]
    assert not held_out & set(others)
    with pytest.raises(ValueError, match=r"test_sizes\['mul_mix_d3'\] must be a positive integer"):
        build_datasets(tmp_path / "c", test_sizes={"mul_mix_d3": 0}, **kw)
