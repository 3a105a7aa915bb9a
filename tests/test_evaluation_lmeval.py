"""End to end through lm-eval 0.4.13, offline: the four math tasks and a toy task on tiny local models.

The math model is a random 2-layer Qwen3 with a byte-level BPE tokenizer trained here on the
shipped problems and a ChatML chat template; the toy model is a random Qwen3 with the toy
tokenizer. Their answers are noise, so scoring is checked deterministically with a canned
lm-eval ``LM`` that answers ``\\boxed{gold}`` or a wrong box.
"""

import gzip
import json
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import torch  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402

from offprincipal.evaluation import (  # noqa: E402
    evaluate,
    evaluate_lm,
    paired_difference,
    read_result,
    read_samples,
)
from offprincipal.evaluation.backends import BudgetError  # noqa: E402
from offprincipal.evaluation.benchmarks import BENCHMARKS  # noqa: E402
from offprincipal.evaluation.results import ResultError  # noqa: E402
from offprincipal.toy.task import build_datasets, is_correct  # noqa: E402

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PROMPT = "Problem: {}\nMark your solution with \\boxed\nAnswer:"
MATH_TASKS = ("aime24", "aime25", "amc23", "math500")


def _raw_rows(name):
    return [json.loads(line) for line in BENCHMARKS[name].path.read_text().splitlines() if line.strip()]


def _tiny_qwen3(tokenizer, out_dir, max_positions):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                      max_position_embeddings=max_positions, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out_dir)  # stored bf16, like a release


@pytest.fixture(scope="module")
def math_model(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_math")
    texts = [str(r[b.question_field]) for n, b in BENCHMARKS.items() for r in _raw_rows(n)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    _tiny_qwen3(fast, out, max_positions=4096)
    return out


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    from offprincipal.toy.tokenizer import save_tokenizer

    root = tmp_path_factory.mktemp("toy")
    build_datasets(root / "datasets", tasks=["mul_mix_d3"], train_size=4, test_size=6, pretrain_size=8,
                   pretrain_mixture={"mul_mix_d3": 1.0})
    tok = save_tokenizer(root / "model")
    _tiny_qwen3(tok, root / "model", max_positions=128)
    return root / "datasets", root / "model"


class CannedLM(LM):
    """Answers every request with ``\\boxed{gold}`` (``right``) or ``\\boxed{-987654}`` (no gold is that),
    with a ChatML template."""

    def __init__(self, right: bool):
        super().__init__()
        self.right = right
        self.calls = 0

    def loglikelihood(self, requests):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError

    def generate_until(self, requests):
        out = []
        for req in requests:
            self.calls += 1
            gold = req.doc["answer"]
            out.append(f"sample {self.calls}: \\boxed{{{gold if self.right else '-987654'}}}")
        return out

    @property
    def tokenizer_name(self):
        return "canned"

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in chat_history) + (
            "<|im_start|>assistant\n" if add_generation_prompt else "")


@pytest.mark.parametrize("right", [True, False])
def test_canned_answers_score_one_and_zero(tmp_path, right):
    suite = {"tasks": {"aime24": {"k": 3}, "aime25": {"k": 2}, "amc23": {"k": 4}, "math500": {"k": 2}}, "limit": 3}
    lm = CannedLM(right)
    evaluate_lm(lm, suite=suite, result_path=tmp_path / "r.json", samples_path=tmp_path / "s.jsonl.gz",
                checkpoint_id="canned", provenance={"revision": "none"})
    assert lm.calls == 3 * (3 + 2 + 4 + 2)  # every repeat was asked for: nothing dropped
    result = read_result(tmp_path / "r.json")
    expected = 1.0 if right else 0.0
    for task, k in (("aime24", 3), ("aime25", 2), ("amc23", 4), ("math500", 2)):
        rec = result["tasks"][task]
        assert (rec["k"], rec["n_problems"], rec["n_samples"]) == (k, 3, 3 * k)
        for score in ("is_equiv", "math_verify"):
            assert rec["scores"][score]["avg_at_k"] == expected
            assert rec["scores"][score]["per_response"] == [[int(right)] * k] * 3
        assert rec["primary"] == "is_equiv"
        assert rec["lm_eval_metrics"]["is_equiv_avg_at_k,all"] == expected
        assert rec["mean_distinct_responses"] == k  # the canned samples differ by their counter
        ids = [str(r[BENCHMARKS[task].id_field]) for r in _raw_rows(task)[:3]]
        assert rec["problem_ids"] == ids


def test_four_math_tasks_through_the_hf_backend(tmp_path, math_model):
    suite = {"tasks": {t: {"k": 3} for t in MATH_TASKS}, "limit": 2, "max_gen_toks": 6, "seed": 11}
    result_path, samples_path = tmp_path / "eval" / "r.json", tmp_path / "eval" / "s.jsonl.gz"
    returned = evaluate(math_model, suite=suite, backend="hf", backend_args={"batch_size": 6},
                        result_path=result_path, samples_path=samples_path,
                        provenance={"name": "tiny", "revision": "local"})
    result = read_result(result_path)
    assert result == json.loads(json.dumps(returned))
    assert result["checkpoint"] == {"id": "tiny", "dir": str(math_model.resolve()),
                                    "provenance": {"name": "tiny", "revision": "local"}}
    backend = result["backend"]
    assert backend["name"] == "hf" and backend["model_args"]["dtype"] == "float32"
    assert backend["model_args"]["max_length"] == backend["longest_prompt_tokens"] + 6
    assert {"lm_eval", "torch", "transformers", "math-verify"} <= set(result["versions"])
    assert result["versions"]["lm_eval"] == "0.4.13"

    lines = read_samples(samples_path)
    assert [line["task"] for line in lines] == [t for t in MATH_TASKS for _ in range(2)]
    for task in MATH_TASKS:
        rec = result["tasks"][task]
        assert rec["sampling"] == {"until": [], "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 0,
                                   "max_gen_toks": 6, "seed": 11, "chat_template": True, "limit": 2}
        assert rec["data"]["sha256"] == BENCHMARKS[task].sha256
        for score in ("is_equiv", "math_verify"):
            summary = rec["scores"][score]
            assert len(summary["per_problem"]) == 2 and all(len(r) == 3 for r in summary["per_response"])
            assert summary["ci95"][0] <= summary["avg_at_k"] <= summary["ci95"][1]
        raw = _raw_rows(task)[:2]
        for line, row in zip([ln for ln in lines if ln["task"] == task], raw):
            question = row[BENCHMARKS[task].question_field]
            # the chat template was applied to Evalchemy's prompt as one user turn, no system turn
            assert line["prompt"] == f"<|im_start|>user\n{PROMPT.format(question)}<|im_end|>\n<|im_start|>assistant\n"
            assert len(line["responses"]) == 3
            assert len(set(line["responses"])) == 3  # k distinct samples: the repeats were really drawn
            assert all(isinstance(t, bool) for t in line["truncated"])
            assert line["correct"]["is_equiv"] == rec["scores"]["is_equiv"]["per_response"][line["doc_id"]]
        flags = [t for ln in lines if ln["task"] == task for t in ln["truncated"]]
        assert rec["truncation_rate"] == pytest.approx(sum(flags) / len(flags))
    with gzip.open(samples_path, "rt") as fh:  # plain gzip JSON Lines
        assert json.loads(fh.readline())["task"] == "aime24"


def test_toy_task_through_the_hf_backend_and_paired_comparison(tmp_path, toy_world, monkeypatch):
    datasets_dir, model = toy_world
    monkeypatch.chdir(tmp_path)  # nothing depends on the working directory
    suite = {"tasks": {"toy:mul_mix_d3": {"k": 4}}, "max_gen_toks": 12}
    results = []
    for seed in (1, 2):
        evaluate(model, suite={**suite, "seed": seed}, backend="hf", backend_args={"batch_size": 8},
                 result_path=tmp_path / f"r{seed}.json", samples_path=tmp_path / f"s{seed}.jsonl.gz",
                 provenance={"run": "toy", "step": seed}, datasets_dir=datasets_dir)
        results.append(read_result(tmp_path / f"r{seed}.json"))
    held_out = [json.loads(line) for line in (datasets_dir / "mul_mix_d3" / "test.jsonl").read_text().splitlines()]
    rec = results[0]["tasks"]["toy:mul_mix_d3"]
    assert rec["primary"] == "toy_verifier" and set(rec["scores"]) == {"toy_verifier"}
    assert rec["problem_ids"] == [r["prompt"] for r in held_out]
    assert rec["sampling"]["chat_template"] is False
    lines = read_samples(tmp_path / "s1.jsonl.gz")
    for line, row in zip(lines, held_out):
        assert line["prompt"] == row["prompt"]  # raw text, no template
        assert len(set(line["responses"])) == 4
        assert line["correct"]["toy_verifier"] == [int(is_correct(row, r)) for r in line["responses"]]
        for text, truncated in zip(line["responses"], line["truncated"]):
            # one character per toy token: 12 visible characters means 12 tokens and no EOS;
            # a response that stopped at EOS used at most 11 of the 12 tokens for text
            assert len(text) <= 12
            if len(text) == 12:
                assert truncated
            if not truncated:
                assert len(text) <= 11
    assert lines[0]["responses"] != read_samples(tmp_path / "s2.jsonl.gz")[0]["responses"]  # the seed is used
    evaluate(model, suite={**suite, "seed": 1}, backend="hf", backend_args={"batch_size": 8},
             result_path=tmp_path / "again.json", samples_path=tmp_path / "again.jsonl.gz",
             provenance={"run": "toy", "step": 1}, datasets_dir=datasets_dir)
    assert read_samples(tmp_path / "again.jsonl.gz") == lines  # and the same seed repeats the run

    diff = paired_difference(tmp_path / "r1.json", tmp_path / "r2.json", "toy:mul_mix_d3", n_boot=200, seed=0)
    acc = [r["tasks"]["toy:mul_mix_d3"]["scores"]["toy_verifier"]["per_problem"] for r in results]
    assert diff["diff"] == pytest.approx(sum(acc[0]) / 6 - sum(acc[1]) / 6, abs=1e-12)
    assert diff["n_problems"] == 6 and diff["ci95"][0] <= diff["diff"] <= diff["ci95"][1]

    fewer = tmp_path / "r3.json"
    evaluate(model, suite={**suite, "limit": 3}, backend="hf", backend_args={}, result_path=fewer,
             samples_path=tmp_path / "s3.jsonl.gz", provenance={"run": "toy"}, datasets_dir=datasets_dir)
    with pytest.raises(ResultError, match="different problems \\(3 only in the first"):
        paired_difference(tmp_path / "r1.json", fewer, "toy:mul_mix_d3")
    with pytest.raises(ResultError, match="has no task 'aime24'"):
        paired_difference(tmp_path / "r1.json", fewer, "aime24")


def test_budget_beyond_the_checkpoint_fails_before_generation(tmp_path, toy_world):
    datasets_dir, model = toy_world
    with pytest.raises(BudgetError, match="max_position_embeddings is 128"):
        evaluate(model, suite={"tasks": {"toy:mul_mix_d3": {"k": 1}}, "max_gen_toks": 200}, backend="hf",
                 backend_args={}, result_path=tmp_path / "r.json", samples_path=tmp_path / "s.jsonl.gz",
                 provenance={}, datasets_dir=datasets_dir)
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "s.jsonl.gz").exists()


def test_read_result_names_the_file_and_field(tmp_path):
    evaluate_lm(CannedLM(True), suite={"tasks": {"amc23": {"k": 2}}, "limit": 2}, result_path=tmp_path / "r.json",
                samples_path=tmp_path / "s.jsonl.gz", checkpoint_id="c", provenance={})
    good = json.loads((tmp_path / "r.json").read_text())
    broken = json.loads(json.dumps(good))
    del broken["tasks"]["amc23"]["scores"]["math_verify"]["ci95"]
    (tmp_path / "b.json").write_text(json.dumps(broken))
    with pytest.raises(ResultError, match=r"b\.json: field 'tasks\.amc23\.scores\.math_verify\.ci95' is missing"):
        read_result(tmp_path / "b.json")
    broken = json.loads(json.dumps(good))
    broken["tasks"]["amc23"]["scores"]["is_equiv"]["avg_at_k"] = 0.5
    (tmp_path / "b.json").write_text(json.dumps(broken))
    with pytest.raises(ResultError, match="avg_at_k' disagrees"):
        read_result(tmp_path / "b.json")
    with pytest.raises(ResultError, match="no such result file"):
        read_result(tmp_path / "missing.json")
