"""Evaluation suites: the paper's settings, filling and checking a suite, and its run-time task files.

A *suite* is a plain dict from the config::

    {"tasks": {"aime24": {"k": 64}, "toy:mul_mix_d3": {"k": 8}},
     "temperature": 0.7, "top_p": 0.8, "max_gen_toks": 32768,
     "chat_template": True, "limit": None, "seed": 1234}

Task names are the four benchmarks (``aime24``, ``aime25``, ``amc23``, ``math500``) or
``toy:<task>`` for the held-out split of a toy-world task (``offprincipal.toy.task``), read
from the datasets directory given at run time. Per task: ``k`` (samples per problem; avg@k),
and optionally ``data_file`` / ``sha256`` (math: another copy of the data) or ``split`` (toy).

:func:`write_task_dir` turns a filled suite into a directory of lm-eval YAML files, one per
task, each ``include:``-ing the static definition under ``offprincipal/evaluation/tasks/`` by
absolute path and overriding the repeats, the ``take_first_k`` filter, the generation
arguments and the data source with absolute paths, so the files work from any directory.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from offprincipal.evaluation.benchmarks import BENCHMARKS

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
TOY_PREFIX = "toy:"
LM_EVAL_PREFIX = "offprincipal_"

#: the paper's evaluation (arXiv 2511.08567, App. C.2): Evalchemy's tasks sampled at T 0.7,
#: top-p 0.8, avg@64 on AIME24/AIME25, avg@32 on AMC23, avg@2 on MATH-500, a 32k budget
PAPER_DEFAULTS: dict = {
    "tasks": {"aime24": {"k": 64}, "aime25": {"k": 64}, "amc23": {"k": 32}, "math500": {"k": 2}},
    "temperature": 0.7,
    "top_p": 0.8,
    "max_gen_toks": 32768,
    "chat_template": True,
    "limit": None,
    "seed": 1234,
}

_SUITE_KEYS = {"tasks", "temperature", "top_p", "max_gen_toks", "chat_template", "limit", "seed"}
_MATH_TASK_KEYS = {"k", "data_file", "sha256"}
_TOY_TASK_KEYS = {"k", "split"}


class SuiteError(ValueError):
    pass


def is_toy(task: str) -> bool:
    return task.startswith(TOY_PREFIX)


def toy_task_of(task: str) -> str:
    return task[len(TOY_PREFIX):]


def lm_eval_name(task: str) -> str:
    """The lm-eval task name of a suite task (prefixed, so lm-eval's built-in aime24 is never shadowed)."""
    if is_toy(task):
        return f"{LM_EVAL_PREFIX}toy_{toy_task_of(task)}"
    return LM_EVAL_PREFIX + task


def _int(value, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SuiteError(f"suite '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SuiteError(f"suite '{key}' must be a number, got {value!r}")
    return float(value)


def _fill_task(name: str, entry) -> dict:
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise SuiteError(f"suite 'tasks.{name}' must be a mapping like {{k: 4}}, got {entry!r}")
    entry = dict(entry)
    if is_toy(name):
        from offprincipal.toy.task import parse_task

        try:
            parse_task(toy_task_of(name))
        except ValueError:
            raise SuiteError(f"suite 'tasks.{name}': unknown toy task {toy_task_of(name)!r}") from None
        allowed = _TOY_TASK_KEYS
        if "k" not in entry:
            raise SuiteError(f"suite 'tasks.{name}.k' is required for a toy task (no paper default)")
        entry.setdefault("split", "test")
        if entry["split"] not in ("train", "test"):
            raise SuiteError(f"suite 'tasks.{name}.split' must be 'train' or 'test', got {entry['split']!r}")
    elif name in BENCHMARKS:
        allowed = _MATH_TASK_KEYS
        entry.setdefault("k", PAPER_DEFAULTS["tasks"][name]["k"])
        if "sha256" in entry and "data_file" not in entry:
            raise SuiteError(f"suite 'tasks.{name}.sha256' is given without 'data_file'")
        if "data_file" in entry:
            entry["data_file"] = str(Path(entry["data_file"]).resolve())
    else:
        raise SuiteError(f"suite 'tasks': unknown task {name!r}; known: {sorted(BENCHMARKS)} or "
                         f"'{TOY_PREFIX}<family>_d<difficulty>'")
    unknown = set(entry) - allowed
    if unknown:
        raise SuiteError(f"suite 'tasks.{name}': unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    _int(entry["k"], f"tasks.{name}.k", 1)
    return entry


def with_defaults(suite: dict | None = None) -> dict:
    """A copy of ``suite`` with every setting filled from :data:`PAPER_DEFAULTS`, checked.

    ``tasks`` may be a list of names (each with its default k) or a mapping. A toy task needs an
    explicit ``k``. ``chat_template`` defaults to on for math tasks and off for toy tasks; one
    suite cannot mix them (lm-eval applies the template per call). Temperature 0 means greedy
    decoding and then needs ``k`` = 1.
    """
    suite = copy.deepcopy(suite or {})
    if not isinstance(suite, dict):
        raise SuiteError(f"a suite must be a mapping, got {type(suite).__name__}")
    unknown = set(suite) - _SUITE_KEYS
    if unknown:
        raise SuiteError(f"suite: unknown keys {sorted(unknown)} (allowed: {sorted(_SUITE_KEYS)})")
    tasks = suite.get("tasks", copy.deepcopy(PAPER_DEFAULTS["tasks"]))
    if isinstance(tasks, (list, tuple)):
        tasks = {name: {} for name in tasks}
    if not isinstance(tasks, dict) or not tasks:
        raise SuiteError(f"suite 'tasks' must be a non-empty mapping or list, got {tasks!r}")
    filled = {"tasks": {str(name): _fill_task(str(name), entry) for name, entry in tasks.items()}}

    toy = [t for t in filled["tasks"] if is_toy(t)]
    math = [t for t in filled["tasks"] if not is_toy(t)]
    if toy and math:
        raise SuiteError(f"suite mixes toy tasks {toy} and math tasks {math}; they need different chat-template "
                         "settings, so put them in separate suites")
    for key in ("temperature", "top_p", "max_gen_toks", "limit", "seed"):
        filled[key] = suite.get(key, PAPER_DEFAULTS[key])
    filled["chat_template"] = suite.get("chat_template", not toy)
    if not isinstance(filled["chat_template"], bool):
        raise SuiteError(f"suite 'chat_template' must be true or false, got {filled['chat_template']!r}")
    if toy and filled["chat_template"]:
        raise SuiteError(f"suite 'chat_template' must be false for toy tasks {toy}: the toy prompt is raw text")

    filled["temperature"] = _number(filled["temperature"], "temperature")
    if filled["temperature"] < 0:
        raise SuiteError(f"suite 'temperature' must be >= 0, got {filled['temperature']}")
    filled["top_p"] = _number(filled["top_p"], "top_p")
    if not 0 < filled["top_p"] <= 1:
        raise SuiteError(f"suite 'top_p' must lie in (0, 1], got {filled['top_p']}")
    _int(filled["max_gen_toks"], "max_gen_toks", 1)
    _int(filled["seed"], "seed", 0)
    if filled["limit"] is not None:
        _int(filled["limit"], "limit", 1)
    if filled["temperature"] == 0:
        many = [t for t, e in filled["tasks"].items() if e["k"] != 1]
        if many:
            raise SuiteError(f"suite 'temperature' 0 is greedy decoding, so every repeat is the same; "
                             f"set k: 1 for {many}")
    return filled


def generation_kwargs(suite: dict) -> dict:
    """lm-eval ``generation_kwargs`` of a filled suite.

    ``until: []`` is always written (without it lm-eval stops at the few-shot delimiter "\\n\\n");
    the backend adds EOS. ``top_k: 0`` switches top-k off in both backends (the HF backend would
    otherwise fall back to the checkpoint's generation config or transformers' 50). No seed:
    a per-request seed would make all k repeats of a problem identical.
    """
    if suite["temperature"] == 0:
        return {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": suite["max_gen_toks"]}
    return {"until": [], "do_sample": True, "temperature": suite["temperature"], "top_p": suite["top_p"],
            "top_k": 0, "max_gen_toks": suite["max_gen_toks"]}


def task_config(task: str, entry: dict, suite: dict, *, datasets_dir=None) -> dict:
    """The run-time lm-eval config of one suite task (a mapping ready for YAML)."""
    k = entry["k"]
    cfg: dict = {
        "include": str(TASKS_DIR / ("offprincipal_toy.yaml" if is_toy(task) else f"offprincipal_{task}.yaml")),
        "task": lm_eval_name(task),
        "repeats": k,
        "filter_list": [{"name": "all", "filter": [{"function": "take_first_k", "k": k}]}],
        "generation_kwargs": generation_kwargs(suite),
    }
    if is_toy(task):
        if datasets_dir is None:
            raise SuiteError(f"suite task {task!r} needs the toy datasets directory (datasets_dir)")
        cfg["dataset_kwargs"] = {"datasets_dir": str(Path(datasets_dir).resolve()),
                                 "toy_task": toy_task_of(task), "split": entry["split"]}
    else:
        cfg["dataset_kwargs"] = {"benchmark": task}
        if "data_file" in entry:
            cfg["dataset_kwargs"]["data_file"] = entry["data_file"]
            if "sha256" in entry:
                cfg["dataset_kwargs"]["sha256"] = entry["sha256"]
    return cfg


def write_task_dir(suite: dict, out_dir: str | os.PathLike, *, datasets_dir=None) -> dict[str, str]:
    """Write one YAML per task of ``suite`` (filled first) into ``out_dir``.

    Returns ``{suite task: lm-eval task name}``. Pass ``out_dir`` to
    ``TaskManager(include_path=out_dir, include_defaults=False)`` or ``lm_eval --include_path``.
    """
    suite = with_defaults(suite)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {}
    for task, entry in suite["tasks"].items():
        cfg = task_config(task, entry, suite, datasets_dir=datasets_dir)
        (out / f"{cfg['task']}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        names[task] = cfg["task"]
    return names
