"""Suite settings and the run-time lm-eval task files, read back through lm-eval's TaskManager."""

import hashlib
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lm_eval.tasks import TaskManager  # noqa: E402

from offprincipal.evaluation import (  # noqa: E402
    PAPER_DEFAULTS,
    TASKS_DIR,
    with_defaults,
    write_task_dir,
)
from offprincipal.evaluation.benchmarks import BENCHMARKS  # noqa: E402
from offprincipal.evaluation.suites import SuiteError, generation_kwargs  # noqa: E402
from offprincipal.toy.task import build_datasets  # noqa: E402


def test_paper_defaults_are_the_papers_settings():
    # arXiv 2511.08567 App. C.2: T 0.7, top-p 0.8, avg@64 / 64 / 32 / 2
    s = with_defaults({})
    assert {t: e["k"] for t, e in s["tasks"].items()} == {"aime24": 64, "aime25": 64, "amc23": 32, "math500": 2}
    settings = (s["temperature"], s["top_p"], s["max_gen_toks"], s["chat_template"], s["limit"])
    assert settings == (0.7, 0.8, 32768, True, None)
    assert s == with_defaults(PAPER_DEFAULTS)
    gen = generation_kwargs(s)
    assert gen == {"until": [], "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 0, "max_gen_toks": 32768}


def test_overrides_and_defaults_per_task():
    s = with_defaults({"tasks": {"aime24": {"k": 4}, "math500": None}, "temperature": 1, "max_gen_toks": 512,
                       "limit": 5})
    assert s["tasks"] == {"aime24": {"k": 4}, "math500": {"k": 2}}
    assert (s["temperature"], s["max_gen_toks"], s["limit"], s["top_p"]) == (1.0, 512, 5, 0.8)
    assert with_defaults({"tasks": ["amc23"]})["tasks"] == {"amc23": {"k": 32}}
    toy = with_defaults({"tasks": {"toy:mul_mix_d3": {"k": 8}}, "max_gen_toks": 48})
    assert toy["chat_template"] is False and toy["tasks"]["toy:mul_mix_d3"] == {"k": 8, "split": "test"}
    greedy = generation_kwargs(with_defaults({"tasks": {"aime24": {"k": 1}}, "temperature": 0}))
    assert greedy == {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": 32768}


@pytest.mark.parametrize("suite, message", [
    ({"task": {}}, "unknown keys \\['task'\\]"),
    ({"tasks": {"aime23": {}}}, "unknown task 'aime23'"),
    ({"tasks": {"aime24": {"k": 0}}}, "tasks.aime24.k"),
    ({"tasks": {"aime24": {"n": 4}}}, "tasks.aime24': unknown keys \\['n'\\]"),
    ({"tasks": {"toy:mul_mix_d3": {}}}, "tasks.toy:mul_mix_d3.k' is required"),
    ({"tasks": {"toy:mul_mix_d9": {"k": 2}}}, "unknown toy task"),
    ({"tasks": {"toy:mul_mix_d3": {"k": 2}, "aime24": {}}}, "mixes toy tasks"),
    ({"tasks": {"toy:mul_mix_d3": {"k": 2}}, "chat_template": True}, "must be false for toy"),
    ({"top_p": 0}, "top_p"),
    ({"temperature": 0}, "greedy decoding"),
    ({"max_gen_toks": 0}, "max_gen_toks"),
    ({"limit": 0}, "limit"),
    ({"tasks": {"aime24": {"sha256": "0" * 64}}}, "without 'data_file'"),
])
def test_bad_suites_name_the_key(suite, message):
    with pytest.raises(SuiteError, match=message):
        with_defaults(suite)


def _resolved(include_path, names):
    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    loaded = manager.load(list(names))["tasks"]
    return {name: loaded[name].config for name in names}


def test_static_tasks_carry_the_paper_settings():
    names = [f"offprincipal_{b}" for b in BENCHMARKS]
    cfgs = _resolved(TASKS_DIR, names)
    for bench, k in (("aime24", 64), ("aime25", 64), ("amc23", 32), ("math500", 2)):
        cfg = cfgs[f"offprincipal_{bench}"]
        assert cfg.repeats == k
        assert cfg.filter_list == [{"name": "all", "filter": [{"function": "take_first_k", "k": k}]}]
        assert cfg.generation_kwargs == {"until": [], "do_sample": True, "temperature": 0.7, "top_p": 0.8,
                                         "top_k": 0, "max_gen_toks": 32768}
        assert cfg.description == "" and cfg.num_fewshot == 0


def test_run_time_tasks_are_honoured_from_any_directory(tmp_path, monkeypatch):
    rows = BENCHMARKS["aime24"].path.read_text().splitlines()[:3]
    data = tmp_path / "aime24_3.jsonl"
    data.write_text("\n".join(rows) + "\n")
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    build_datasets(tmp_path / "ds", tasks=["add_sub_d2"], train_size=2, test_size=5, pretrain_size=4,
                   pretrain_mixture={"add_sub_d2": 1.0}, rl_task="add_sub_d2")
    suite = {"tasks": {"aime24": {"k": 3, "data_file": str(data), "sha256": digest}, "amc23": {"k": 5}},
             "temperature": 0.9, "top_p": 0.95, "max_gen_toks": 64}
    math_names = write_task_dir(suite, tmp_path / "run")
    toy_names = write_task_dir({"tasks": {"toy:add_sub_d2": {"k": 6}}, "max_gen_toks": 20}, tmp_path / "run_toy",
                               datasets_dir=tmp_path / "ds")
    assert math_names == {"aime24": "offprincipal_aime24", "amc23": "offprincipal_amc23"}
    assert toy_names == {"toy:add_sub_d2": "offprincipal_toy_add_sub_d2"}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # absolute paths: the files work whatever the cwd
    cfgs = _resolved(tmp_path / "run", math_names.values())
    aime, amc = cfgs["offprincipal_aime24"], cfgs["offprincipal_amc23"]
    assert (aime.repeats, aime.filter_list[0]["filter"][0]["k"]) == (3, 3)
    assert (amc.repeats, amc.filter_list[0]["filter"][0]["k"]) == (5, 5)
    assert aime.generation_kwargs == {"until": [], "do_sample": True, "temperature": 0.9, "top_p": 0.95, "top_k": 0,
                                      "max_gen_toks": 64}
    assert "seed" not in aime.generation_kwargs
    assert aime.dataset_kwargs == {"benchmark": "aime24", "data_file": str(data.resolve()), "sha256": digest}
    manager = TaskManager(include_path=str(tmp_path / "run"), include_defaults=False)
    tasks = manager.load(list(math_names.values()))["tasks"]
    assert len(tasks["offprincipal_aime24"].eval_docs) == 3  # the overriding data file was read
    assert len(tasks["offprincipal_amc23"].eval_docs) == 40
    assert tasks["offprincipal_amc23"].doc_to_text(tasks["offprincipal_amc23"].eval_docs[0]) == (
        "Problem: " + json.loads(BENCHMARKS["amc23"].path.read_text().splitlines()[0])["question"]
        + "\nMark your solution with \\boxed\nAnswer:")

    toy = TaskManager(include_path=str(tmp_path / "run_toy"), include_defaults=False).load(
        ["offprincipal_toy_add_sub_d2"])["tasks"]["offprincipal_toy_add_sub_d2"]
    held_out = [json.loads(line) for line in (tmp_path / "ds" / "add_sub_d2" / "test.jsonl").read_text().splitlines()]
    assert [toy.doc_to_text(d) for d in toy.eval_docs] == [r["prompt"] for r in held_out]
    assert toy.config.repeats == 6 and toy.config.generation_kwargs["max_gen_toks"] == 20


def test_toy_task_needs_the_datasets_dir(tmp_path):
    with pytest.raises(SuiteError, match="datasets_dir"):
        write_task_dir({"tasks": {"toy:add_sub_d2": {"k": 2}}}, tmp_path)
