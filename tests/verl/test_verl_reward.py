"""The +1/-1 reward (offprincipal.training.reward) on real-format answers, loaded the way verl
0.9.1 loads it (``load_reward_manager`` on the composed config), and DAPO's overlong penalty
from verl's own ``DAPORewardManager`` (it runs on CPU) at the edges of the buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from transformers import AutoTokenizer
from verl import DataProto

from offprincipal.training.reward import compute_score
from offprincipal.training.spec import RunSpec, VerlLaunch, to_verl_overrides

MAX_RESP, BUFFER, FACTOR = 16, 4, 1.0


@pytest.mark.parametrize(
    "response, truth, correct",
    [
        ("The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", True),
        ("so $x = \\boxed{0.5}$", "\\frac{1}{2}", True),  # decimal vs fraction
        ("\\boxed{\\dfrac{3}{4}}", "3/4", True),  # \dfrac vs a/b
        ("Final: \\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),  # equal surds
        ("\\boxed{x^2+2x+1}", "(x+1)^2", True),  # equal polynomials
        ("therefore $\\boxed{(1,2)}$.", "(1, 2)", True),  # tuples
        ("The final answer is \\boxed{\\pi/2}", "\\frac{\\pi}{2}", True),
        ("\\boxed{1,000}", "1000", True),  # thousands separator
        ("Answer: 12", "12", True),  # DAPO's "Answer:" form, no box
        ("first \\boxed{3} then correction \\boxed{5}", "5", True),  # the last box counts
        ("first \\boxed{3} then correction \\boxed{5}", "3", False),
        ("\\boxed{42}", "43", False),
        ("\\boxed{-7}", "7", False),
        ("\\boxed{\\frac{1}{3}}", "0.33", False),  # close is not equal
        ("I cannot solve this.", "7", False),
    ],
)
def test_math_answers(response, truth, correct):
    assert compute_score("ds_sr", response, truth) == ({"score": 1.0, "acc": 1.0} if correct else {"score": -1.0, "acc": 0.0})


def test_toy_answers_use_the_toy_verifier():
    assert compute_score("toy/mul_mix_d3", "= 12 </s>", "12")["score"] == 1.0
    assert compute_score("toy/mul_mix_d3", "= 13 </s>", "12")["score"] == -1.0


@pytest.fixture(scope="module")
def manager(tiny_base, tmp_path_factory):
    """verl's reward manager for a DAPO spec, built by verl's loader from the composed config."""
    from verl.trainer.ppo.reward import load_reward_manager

    spec = RunSpec(algorithm="dapo", max_prompt_length=4, max_response_length=MAX_RESP, overlong_buffer_len=BUFFER,
                   overlong_penalty_factor=FACTOR, prompts_per_step=2, group_size=2)
    root = tmp_path_factory.mktemp("reward")
    launch = VerlLaunch(model_path=str(tiny_base), train_files=[str(root / "t.parquet")],
                        reward_path=str(__import__("offprincipal.training.verl_reward", fromlist=["x"]).__file__),
                        output_dir=str(root / "ckpt"), metrics_path=str(root / "a.jsonl"), experiment_name="t",
                        n_gpus_per_node=1)
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=to_verl_overrides(spec, launch=launch))
    tok = AutoTokenizer.from_pretrained(str(tiny_base))
    return load_reward_manager(cfg, tok), tok


def _score(manager, tok, answer_word: str, length: int, truth: str) -> dict:
    """One response of ``length`` tokens: the answer word, then filler words."""
    mgr = manager
    prompt = torch.tensor([[tok.convert_tokens_to_ids("w1")] * 4])
    ids = [tok.convert_tokens_to_ids(answer_word)] + [tok.convert_tokens_to_ids("w2")] * (length - 1)
    responses = torch.tensor([ids + [tok.pad_token_id] * (MAX_RESP - length)])
    attention = torch.tensor([[1] * 4 + [1] * length + [0] * (MAX_RESP - length)])
    data = DataProto.from_dict(
        tensors={"prompts": prompt, "responses": responses, "attention_mask": attention},
        non_tensors={"data_source": np.array(["ds_sr"], dtype=object),
                     "reward_model": np.array([{"ground_truth": truth}], dtype=object),
                     "extra_info": np.array([{}], dtype=object)},
    )
    return mgr.loop.run_until_complete(mgr.run_single(data))


@pytest.mark.parametrize(
    "length, penalty",
    # hand-computed: expected length 16 - 4 = 12; penalty min(-(L - 12) / 4 * 1.0, 0)
    [(1, 0.0), (11, 0.0), (12, 0.0), (13, -0.25), (14, -0.5), (15, -0.75), (16, -1.0)],
)
def test_overlong_penalty_at_the_buffer_edges(manager, length, penalty):
    mgr, tok = manager
    assert type(mgr).__name__ == "DAPORewardManager"
    right = _score(mgr, tok, "\\boxed{3}", length, "3")
    wrong = _score(mgr, tok, "\\boxed{4}", length, "3")
    assert right["reward_score"] == pytest.approx(1.0 + penalty, abs=1e-12)
    assert wrong["reward_score"] == pytest.approx(-1.0 + penalty, abs=1e-12)
    info = right["reward_extra_info"]
    assert info["acc"] == 1.0 and info["overlong_reward"] == pytest.approx(penalty, abs=1e-12)
    assert info["overlong"] == (penalty < 0)
