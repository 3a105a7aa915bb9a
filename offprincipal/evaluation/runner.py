"""Evaluate one checkpoint on one suite through lm-eval and write its result and samples files.

:func:`evaluate` builds the backend's model (checking that the longest prompt plus the
generation budget fits the checkpoint), runs ``lm_eval.simple_evaluate`` on the suite's
run-time tasks, checks that lm-eval ran what was written (repeats, filter, generation
arguments, k responses per problem, its per-problem scores equal ours), and writes the result
JSON and the gzip samples atomically to the paths the caller gives.
:func:`evaluate_lm` does the same with an lm-eval model object the caller built.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

from offprincipal.evaluation import backends, scoring, suites
from offprincipal.evaluation.benchmarks import file_sha256, load_rows
from offprincipal.evaluation.results import (
    MATH_SCORES,
    SCHEMA,
    TOY_SCORES,
    score_summary,
    write_result,
    write_samples,
)


class EvaluationError(RuntimeError):
    pass


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("lm_eval", "torch", "transformers", "vllm", "math-verify", "datasets"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            if dist != "vllm":
                out[dist] = None
    return out


def _load_tasks(suite: dict, tasks_dir: Path, datasets_dir) -> tuple[object, dict, dict]:
    from lm_eval.tasks import TaskManager

    names = suites.write_task_dir(suite, tasks_dir, datasets_dir=datasets_dir)
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    missing = [n for n in names.values() if n not in manager.all_tasks]
    if missing:  # lm-eval's index skips a YAML it cannot read, logging only at debug level
        raise EvaluationError(f"lm-eval did not index the run-time tasks {missing} written to {tasks_dir}")
    loaded = manager.load(list(names.values()))["tasks"]
    return manager, names, {task: loaded[name] for task, name in names.items()}


def _docs(task_obj, limit) -> list[dict]:
    docs = list(task_obj.eval_docs)
    return docs if limit is None else docs[:limit]


def render_prompt(text: str, tokenizer, chat_template: bool) -> str:
    """A prompt as lm-eval renders it: one user turn with the generation prompt, or the raw text."""
    if not chat_template:
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def longest_prompt_tokens(task_objs: dict, tokenizer, suite: dict) -> int:
    """Tokens of the longest rendered prompt over the suite's problems (special tokens counted)."""
    longest = 0
    for task_obj in task_objs.values():
        for doc in _docs(task_obj, suite["limit"]):
            text = render_prompt(task_obj.doc_to_text(doc), tokenizer, suite["chat_template"])
            longest = max(longest, len(tokenizer(text).input_ids))
    return longest


def _data_provenance(task: str, entry: dict, datasets_dir) -> dict:
    if suites.is_toy(task):
        from offprincipal.toy.task import split_path

        path = split_path(datasets_dir, suites.toy_task_of(task), entry["split"]).resolve()
        return {"path": str(path), "sha256": file_sha256(path), "split": entry["split"]}
    _, prov = load_rows(task, entry.get("data_file"), entry.get("sha256"))
    return prov


def _check_config(task: str, cfg: dict, expected: dict) -> None:
    """lm-eval's resolved config of a task must carry what the run-time YAML set."""
    for key in ("repeats", "filter_list", "generation_kwargs", "dataset_kwargs"):
        if cfg.get(key) != expected[key]:
            raise EvaluationError(f"task {task!r}: lm-eval resolved {key} = {cfg.get(key)!r}, "
                                  f"but the run-time task set {expected[key]!r}")
    if "seed" in cfg["generation_kwargs"]:
        raise EvaluationError(f"task {task!r}: a seed in generation_kwargs makes every repeat identical")


def _task_record(task: str, entry: dict, suite: dict, samples: list[dict], lm_eval_metrics: dict, data: dict,
                 count_tokens: Callable[[str], int] | None, context: int | None, finish_log) -> tuple[dict, list[dict]]:
    k = entry["k"]
    toy = suites.is_toy(task)
    score_names = TOY_SCORES if toy else MATH_SCORES
    metric_of = {s: f"{s}_avg_at_k" for s in score_names}
    budget = suite["max_gen_toks"]
    samples = sorted(samples, key=lambda s: s["doc_id"])
    correct = {s: [] for s in score_names}
    ids, lines, truncated_all, distinct = [], [], [], []
    for sample in samples:
        doc = sample["doc"]
        responses = sample["filtered_resps"][0]
        if isinstance(responses, str) or len(responses) != k:
            got = 1 if isinstance(responses, str) else len(responses)
            raise EvaluationError(f"task {task!r}, problem {doc['id']!r}: lm-eval returned {got} responses, "
                                  f"expected k = {k}")
        prompt = sample["arguments"][0][0]
        if count_tokens is not None and context is not None and count_tokens(prompt) + budget > context:
            raise EvaluationError(f"task {task!r}, problem {doc['id']!r}: the rendered prompt does not fit the "
                                  f"model length {context} beside max_gen_toks {budget}, so lm-eval truncated it")
        outcome = {}
        for s in score_names:
            if s == "is_equiv":
                outcome[s] = [int(scoring.is_equiv_correct(doc["answer"], r)) for r in responses]
            elif s == "math_verify":
                outcome[s] = [int(scoring.math_verify_correct(doc["answer"], r)) for r in responses]
            else:
                outcome[s] = [int(scoring.toy_correct(doc, r)) for r in responses]
            ours = sum(outcome[s]) / k
            theirs = sample.get(metric_of[s])
            if theirs is None or abs(ours - theirs) > 1e-12:
                raise EvaluationError(f"task {task!r}, problem {doc['id']!r}: lm-eval scored {metric_of[s]} = "
                                      f"{theirs}, the result writer {ours}")
            correct[s].append(outcome[s])
        try:
            truncated = [None if finish_log is None else finish_log.pop(r) for r in responses]
        except KeyError as err:
            raise EvaluationError(f"task {task!r}, problem {doc['id']!r}: {err.args[0]}") from None
        truncated_all += truncated
        distinct.append(len(set(responses)))
        ids.append(doc["id"])
        extract = scoring.toy_extract if toy else scoring.extract_boxed
        lines.append({"task": task, "doc_id": sample["doc_id"], "problem_id": doc["id"], "prompt": prompt,
                      "gold": doc["answer"], "responses": list(responses),
                      "extracted": [extract(r) for r in responses], "correct": outcome, "truncated": truncated})
    if not ids:
        raise EvaluationError(f"task {task!r}: lm-eval logged no samples")
    gen = suites.generation_kwargs(suite)
    record = {
        "lm_eval_task": suites.lm_eval_name(task),
        "k": k,
        "n_problems": len(ids),
        "n_samples": len(ids) * k,
        "sampling": {**gen, "seed": suite["seed"], "chat_template": suite["chat_template"], "limit": suite["limit"]},
        "data": data,
        "problem_ids": ids,
        "primary": score_names[0],
        "scores": {s: score_summary(s, correct[s], k) for s in score_names},
        "truncation_rate": (None if finish_log is None else sum(truncated_all) / len(truncated_all)),
        "truncation_rule": "generation reached max_gen_toks without EOS (vLLM finish_reason 'length'; "
                           "transformers: no EOS id in a budget-long continuation); null when the model "
                           "object does not record it",
        "mean_distinct_responses": sum(distinct) / len(distinct),
        "lm_eval_metrics": lm_eval_metrics,
    }
    return record, lines


def _run(lm, manager, names: dict, task_objs: dict, *, suite: dict, datasets_dir, header: dict,
         result_path, samples_path, count_tokens, context) -> dict:
    from lm_eval import simple_evaluate

    start = time.perf_counter()
    seed = suite["seed"]
    out = simple_evaluate(
        model=lm, tasks=list(task_objs.values()), task_manager=manager, limit=suite["limit"],
        apply_chat_template=suite["chat_template"], log_samples=True, bootstrap_iters=0,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
    )
    if out is None:
        raise EvaluationError("lm-eval returned no results on this rank")
    records, lines = {}, []
    for task, entry in suite["tasks"].items():
        name = names[task]
        expected = suites.task_config(task, entry, suite, datasets_dir=datasets_dir)
        _check_config(task, out["configs"][name], expected)
        metrics = {key: value for key, value in out["results"][name].items() if key not in ("name", "alias")}
        data = _data_provenance(task, entry, datasets_dir)
        records[task], task_lines = _task_record(task, entry, suite, out["samples"][name], metrics, data,
                                                 count_tokens, context, getattr(lm, "finish_log", None))
        lines += task_lines
    result = {
        "schema": SCHEMA,
        **header,
        "suite": suite,
        "versions": versions(),
        "tasks": records,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - start,
    }
    # samples first: a result file present means its samples are complete too
    write_samples(samples_path, lines)
    write_result(result_path, result)
    scoring.clear_cache()
    return result


def _header(checkpoint_id: str, checkpoint_dir, provenance: dict, backend: dict) -> dict:
    if not isinstance(provenance, dict):
        raise TypeError(f"checkpoint {checkpoint_id!r}: provenance must be a dict, got {type(provenance).__name__}")
    directory = None if checkpoint_dir is None else str(Path(checkpoint_dir).resolve())
    return {"checkpoint": {"id": checkpoint_id, "dir": directory, "provenance": provenance},
            "backend": backend}


def evaluate(checkpoint_dir, *, suite: dict, backend: str, backend_args: dict | None, result_path, samples_path,
             provenance: dict, datasets_dir=None, threads: int = 1, checkpoint_id: str | None = None) -> dict:
    """Evaluate ``checkpoint_dir`` on ``suite`` with backend ``hf`` or ``vllm``; write and return the result.

    ``suite`` is filled with :func:`offprincipal.evaluation.suites.with_defaults`; toy tasks read
    ``datasets_dir``. ``provenance`` (e.g. resolved revision, or run and step) is stored as
    given; ``checkpoint_id`` defaults to ``provenance['name']`` or the directory name.
    """
    from transformers import AutoTokenizer

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_id = checkpoint_id or (provenance or {}).get("name") or checkpoint_dir.name
    if backend not in backends.BACKENDS:
        raise ValueError(f"checkpoint {checkpoint_id!r}: unknown backend {backend!r}; known: {list(backends.BACKENDS)}")
    suite = suites.with_defaults(suite)
    if backend == "hf":
        import torch

        torch.set_num_threads(int(threads))
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    with tempfile.TemporaryDirectory(prefix="offprincipal-eval-") as tmp:
        manager, names, task_objs = _load_tasks(suite, Path(tmp), datasets_dir)
        longest = longest_prompt_tokens(task_objs, tokenizer, suite)
        positions = backends.max_positions(checkpoint_dir)
        context = backends.context_length(longest, suite["max_gen_toks"], positions, checkpoint=checkpoint_id)
        args = backends.model_args(backend, checkpoint_dir, context=context, seed=suite["seed"],
                                   backend_args=backend_args)
        lm = backends.build_lm(backend, args)
        header = _header(checkpoint_id, checkpoint_dir, provenance, {
            "name": backend, "model_args": args, "backend_args": dict(backend_args or {}),
            "longest_prompt_tokens": longest, "max_position_embeddings": positions, "threads": int(threads)})
        return _run(lm, manager, names, task_objs, suite=suite, datasets_dir=datasets_dir, header=header,
                    result_path=result_path, samples_path=samples_path,
                    count_tokens=lambda text: len(tokenizer(text).input_ids),
                    context=context)


def evaluate_lm(lm, *, suite: dict, result_path, samples_path, checkpoint_id: str, provenance: dict,
                datasets_dir=None, count_tokens: Callable[[str], int] | None = None,
                backend_name: str | None = None) -> dict:
    """:func:`evaluate` with an lm-eval model object built by the caller (any ``lm_eval.api.model.LM``).

    The truncation flags come from the model's ``finish_log`` (:mod:`offprincipal.evaluation.finish`)
    and are null without one; ``count_tokens`` enables the check that no prompt was truncated.
    """
    suite = suites.with_defaults(suite)
    with tempfile.TemporaryDirectory(prefix="offprincipal-eval-") as tmp:
        manager, names, task_objs = _load_tasks(suite, Path(tmp), datasets_dir)
        header = _header(checkpoint_id, None, provenance, {"name": backend_name or type(lm).__name__,
                                                           "model_args": None})
        return _run(lm, manager, names, task_objs, suite=suite, datasets_dir=datasets_dir, header=header,
                    result_path=result_path, samples_path=samples_path, count_tokens=count_tokens, context=None)
