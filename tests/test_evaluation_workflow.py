"""The evaluation stage in the workflow: the config's evaluations section, what a dry run plans,
the resources of the GPU rule, and the paired comparisons file."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from offprincipal.config import ConfigError, load, validate
from offprincipal.evaluation import stats
from offprincipal.evaluation.stage import AVERAGE, paired_table

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def dry_run(*args, env=None, cwd=REPO):
    return subprocess.run(SNAKEMAKE + ["-n", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def planned(out: str, rule: str) -> list[str]:
    """The 'output:' path of every planned job of ``rule`` in a dry run's printout."""
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", out)
    return [re.search(r"output: (\S+?)(?:,|\n|$)", b).group(1) for b in blocks if re.match(rf"(?:local)?rule {rule}:", b)]


@pytest.fixture(scope="module")
def toy_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["artifacts"]["table4"].pop("suite"), "artifacts.table4"),
        (lambda c: c["artifacts"]["table4"].update(suite="nope"), "artifacts.table4.suite"),
        (lambda c: c["artifacts"]["table4"].update(reference="sft_final"), "artifacts.table4.reference"),
        (lambda c: c["artifacts"]["fig4"].update(suite="heldout"), "artifacts.fig4.suite"),
        (lambda c: c["artifacts"]["fig10"]["contrasts"].insert(0, ["lora_r2_lo_final", "nope"]), "artifacts.fig10.contrasts[0]"),
        (lambda c: c["evaluations"]["suites"]["heldout"]["tasks"].update({"toy:nope_d9": {"k": 2}}),
         "evaluations.suites.heldout"),
        (lambda c: c["evaluations"]["suites"]["heldout"].update(temperature="hot"), "evaluations.suites.heldout.temperature"),
        (lambda c: c["evaluations"].update(checkpoints={"nope": ["toy_base"]}), "evaluations.checkpoints.nope"),
        (lambda c: c["evaluations"].update(checkpoints={"heldout": ["nope"]}), "evaluations.checkpoints.heldout[0]"),
        (lambda c: c["evaluations"].update(backend="tgi"), "evaluations.backend"),
    ],
)
def test_invalid_evaluation_config_fails_naming_the_key(toy_config, edit, key):
    config = copy.deepcopy(toy_config)
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert f"'{key}'" in str(err.value)


def test_toy_tasks_need_the_toy_world():
    config = load(REPO / "config" / "paper.yaml")
    config["evaluations"]["suites"]["toy"] = {"tasks": {"toy:mul_mix_d3": {"k": 2}}}
    with pytest.raises(ConfigError, match="'evaluations.suites.toy.tasks'.*toy world"):
        validate(config)


def test_paper_dry_run_plans_every_evaluation_it_names(tmp_path):
    config = load(REPO / "config" / "paper.yaml")
    want = {f"results/paper/eval/{suite}/{c}.json"
            for suite, ckpts in config["evaluations"]["checkpoints"].items() for c in ckpts}
    accuracy_artifacts = []
    for name, art in config["artifacts"].items():
        if "suite" in art:
            accuracy_artifacts.append(name)
            want |= {f"results/paper/eval/{art['suite']}/{c}.json"
                     for p in art["pairs"] for c in (config["pairs"][p]["base"], config["pairs"][p]["finetuned"])}
    # every saved step and final checkpoint of the paper's own runs is evaluated
    runs = {c for c, spec in config["checkpoints"].items() if spec["source"] == "run"}
    assert runs <= {Path(w).stem for w in want}
    result = dry_run("--configfile=config/paper.yaml", "--directory", str(tmp_path))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert set(planned(out, "evaluate")) == want
    assert sorted(planned(out, "paired_evaluations")) == sorted(
        f"results/paper/eval/paired/{a}.csv" for a in accuracy_artifacts)


def test_listed_evaluations_are_planned_beside_the_artifacts(tmp_path):
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    config["evaluations"]["checkpoints"] = {"math": ["qwen3_8b_base", "deepscaler_1p5b"]}
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = dry_run(f"--configfile={path}", "--directory", str(tmp_path))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = set(planned(out, "evaluate"))
    assert {"results/paper/eval/math/qwen3_8b_base.json", "results/paper/eval/math/deepscaler_1p5b.json"} <= jobs
    assert "results/paper/eval/math_28k/qwen3_8b_base.json" in jobs  # the two suites never collide


def test_slurm_profile_gives_vllm_evaluations_their_gpus(tmp_path):
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    config["evaluations"]["backend_args"].update(tensor_parallel_size=2, data_parallel_size=2)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "SLURM_ACCOUNT": "acct", "SLURM_CPU_PARTITION": "cpu", "SLURM_GPU_PARTITION": "gpu"}
    result = dry_run("table1_acc", "--profile", str(REPO / "profiles" / "slurm"), f"--configfile={path}",
                     "--directory", str(tmp_path), env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    block = out[out.index("rule evaluate:"):]
    resources = next(line for line in block.splitlines() if "resources:" in line)
    assert "gpu=4" in resources and "slurm_partition=gpu" in resources


def test_toy_evaluations_run_on_the_cpu_without_gpus(tmp_path):
    result = dry_run("table4", "--configfile=config/config.yaml", "--directory", str(tmp_path))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    block = out[out.index("rule evaluate:"):]
    resources = next(line for line in block.splitlines() if "resources:" in line)
    assert "gpu=0" in resources


def _result(ckpt: str, per_task: dict[str, list[float]]) -> dict:
    """A minimal result with k = 1 (per-problem accuracy is the single response's correctness)."""
    from offprincipal.evaluation.results import score_summary

    tasks = {}
    for task, acc in per_task.items():
        tasks[task] = {"k": 1, "n_problems": len(acc), "n_samples": len(acc), "problem_ids": list(range(len(acc))),
                       "primary": "is_equiv", "sampling": {}, "data": {}, "truncation_rate": None,
                       "scores": {"is_equiv": score_summary("is_equiv", [[int(a)] for a in acc], 1)}}
    return {"schema": "offprincipal.evaluation.result/1", "checkpoint": {"id": ckpt, "dir": None, "provenance": {}},
            "suite": {}, "backend": {"name": "test"}, "versions": {}, "tasks": tasks}


def test_paired_table_holds_each_task_and_the_average_of_a_multi_task_suite(tmp_path):
    from offprincipal.io import write_json

    rng = np.random.default_rng(1)
    a = {"aime24": rng.integers(0, 2, 30).tolist(), "math500": rng.integers(0, 2, 50).tolist()}
    b = {"aime24": rng.integers(0, 2, 30).tolist(), "math500": rng.integers(0, 2, 50).tolist()}
    for name, acc in (("a", a), ("b", b)):
        write_json(tmp_path / f"{name}.json", _result(name, acc))
    table = paired_table([("a", "b")], {"a": tmp_path / "a.json", "b": tmp_path / "b.json"}, n_boot=4000)
    assert list(table["task"]) == ["aime24", "math500", AVERAGE]
    for task in ("aime24", "math500"):
        row = table[table["task"] == task].iloc[0]
        assert row["diff"] == pytest.approx(np.mean(a[task]) - np.mean(b[task]))
    avg = table[table["task"] == AVERAGE].iloc[0]
    # the paper's average: the mean of the task means, not of all problems pooled
    want = np.mean([np.mean(a[t]) - np.mean(b[t]) for t in a])
    assert avg["diff"] == pytest.approx(want)
    assert avg["ci95_lo"] < want < avg["ci95_hi"]


def test_stratified_interval_of_constant_tasks_is_their_mean_of_means():
    lo, hi = stats.stratified_bootstrap_task_mean([[1.0] * 30, [0.0] * 500], n_boot=200)
    assert lo == hi == 0.5
    d = stats.paired_bootstrap_task_mean([([1.0] * 4, [0.0] * 4), ([0.5] * 9, [0.5] * 9)], n_boot=200)
    assert d["diff"] == 0.5 and d["ci95"] == [0.5, 0.5] and d["n_problems"] == 13


def test_stratified_interval_matches_a_hand_rolled_bootstrap():
    rng = np.random.default_rng(3)
    t1, t2 = rng.random(12), rng.random(7)
    lo, hi = stats.stratified_bootstrap_task_mean([t1, t2], n_boot=3000, seed=5)
    # independent construction: resample each task by hand and average the two means
    r = np.random.default_rng(11)
    means = [(t1[r.integers(0, 12, 12)].mean() + t2[r.integers(0, 7, 7)].mean()) / 2 for _ in range(20000)]
    ref_lo, ref_hi = np.quantile(means, [0.025, 0.975])
    assert lo == pytest.approx(ref_lo, abs=0.02) and hi == pytest.approx(ref_hi, abs=0.02)


def test_paired_comparison_refuses_a_task_the_other_checkpoint_lacks(tmp_path):
    from offprincipal.io import write_json

    write_json(tmp_path / "a.json", _result("a", {"aime24": [1, 0], "amc23": [1]}))
    write_json(tmp_path / "b.json", _result("b", {"aime24": [0, 0]}))
    with pytest.raises(ValueError, match="'b' was not evaluated on task 'amc23'"):
        paired_table([("a", "b")], {"a": tmp_path / "a.json", "b": tmp_path / "b.json"})
