"""The runs and datasets sections of the config: schema, references, and the paper's runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from offprincipal.config import ConfigError, datasets, load, validate
from offprincipal.training.spec import RunSpec

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.fixture(scope="module")
def paper():
    return load(REPO / "config" / "paper.yaml")


def test_toy_runs_name_toy_tasks_as_implicit_datasets(toy):
    config = validate(copy.deepcopy(toy))
    ds = datasets(config)
    assert all(config["runs"][r]["backend"] == "trl" for r in config["runs"])
    assert {config["runs"][r]["data"] for r in config["runs"]} <= set(ds)
    assert all(ds[d] == {"source": "toy", "task": d} for d in ds)


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["runs"]["dapo_a"].update(data="nope"), "runs.dapo_a.data"),
        (lambda c: c["runs"]["dapo_a"].update(backend="jax"), "runs.dapo_a.backend"),
        (lambda c: c["runs"]["dapo_a"].update(task="mul_mix_d3"), "runs.dapo_a"),  # the old key
        (lambda c: c["runs"]["dapo_a"].update(verl={"nnodes": 2}), "runs.dapo_a.verl"),
        (lambda c: c["runs"]["dapo_a"]["spec"].update(save_steps=[0, 5, 10, 20, 40]) or c["runs"]["dapo_a"].update(backend="verl"),
         "runs.dapo_a.spec.save_steps"),
        (lambda c: c.update(datasets={"x": {"source": "toy", "task": "nope_d9"}}), "datasets.x.task"),
        (lambda c: c.update(datasets={"x": {"source": "hub", "prompt_template": "no slot",
                                            "parts": [{"repo": "a/b", "revision": "main", "files": ["*.parquet"],
                                                       "question": "q", "answer": "a"}]}}), "datasets.x.prompt_template"),
        (lambda c: c.update(datasets={"x": {"source": "hub", "parts": [{"repo": "a/b", "revision": "main"}]}}),
         "datasets.x.parts.0"),
        (lambda c: c.update(datasets={"hubby": {"source": "hub", "parts": [{"repo": "a/b", "revision": "main",
                                                  "files": ["*.parquet"], "question": "q", "answer": "a"}]}})
         or c["runs"]["dapo_a"].update(data="hubby"), "runs.dapo_a.data"),  # trl trains on toy data only
    ],
)
def test_invalid_runs_and_datasets_name_the_key(toy, edit, key):
    config = copy.deepcopy(toy)
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert f"'{key}" in str(err.value), str(err.value)


def test_every_paper_run_is_a_verl_run_with_its_checkpoints(paper):
    runs, ckpts = paper["runs"], paper["checkpoints"]
    by_run: dict[str, set] = {}
    for c in ckpts.values():
        if c["source"] == "run":
            by_run.setdefault(c["run"], set()).add(c["step"])
    for rid, run in runs.items():
        spec = RunSpec.from_dict(run["spec"])
        assert run["backend"] == "verl" and paper["datasets"][run["data"]]["source"] == "hub", rid
        # every saved step and the final checkpoint are checkpoints the analyses can use
        assert by_run[rid] == {*spec.save_steps, "final"}, rid


def test_paper_runs_follow_app_c1(paper):
    specs = {rid: RunSpec.from_dict(r["spec"]).resolved() for rid, r in paper["runs"].items()}
    for rid, s in specs.items():
        assert (s.lr if s.adapter == "none" and rid != "ds15_lr_x10" else 1e-6) == 1e-6, rid
        assert s.betas == (0.9, 0.999) and s.lr_scheduler == "constant" and not s.kl_in_loss and s.kl_coef == 0
        assert (s.clip_ratio_low, s.clip_ratio_high) == (0.2, 0.28) and s.loss_agg_mode == "token-mean"
        assert s.overlong_buffer and s.overlong_buffer_len == 1024 and s.overlong_penalty_factor == 1.0
        if s.adapter == "none":
            assert (s.prompts_per_step, s.mini_batch_prompts, s.updates_per_step) == (256, 64, 4), rid
        else:
            assert (s.prompts_per_step, s.mini_batch_prompts, s.steps) == (128, 32, 200), rid
    ds15 = [r for r in specs if r.startswith("ds15_") and specs[r].adapter == "none"]
    assert {specs[r].mask for r in ds15} == {"none", "principal", "nonprincipal", "low", "safe", "random"}
    assert all(specs[r].group_size == 12 and specs[r].max_response_length == 8192 for r in ds15)
    assert all(320 in specs[r].save_steps and specs[r].steps == 500 for r in ds15 if specs[r].mask != "none")
    q4 = [r for r in specs if r.startswith("q3_4b")]
    assert len(q4) == 3 and all((specs[r].group_size, specs[r].steps, specs[r].max_response_length) == (16, 150, 20480) for r in q4)
    assert specs["q3_4b_dense_a"].seed != specs["q3_4b_dense_b"].seed
    assert paper["runs"]["q3_4b_intervened"]["base"] == "qwen3_4b_base_intervened"
    grid = {(paper["runs"][r]["base"], specs[r].adapter, specs[r].adapter_rank, specs[r].lr) for r in specs if specs[r].adapter != "none"}
    assert len(grid) == 24
    assert {(b, a) for b, a, _, _ in grid} == {(b, a) for b in ("ds_r1_distill_qwen_1p5b", "llama3p2_3b_instruct") for a in ("lora", "pissa")}
    assert {lr for *_, lr in grid} == {1e-4, 5e-5, 1e-5}


def test_adapter_pairs_compare_against_the_original_base(paper):
    for pid, pair in paper["pairs"].items():
        ck = paper["checkpoints"][pair["finetuned"]]
        if ck["source"] == "run":
            assert pair["base"] == paper["runs"][ck["run"]]["base"], pid  # never a PiSSA residual
