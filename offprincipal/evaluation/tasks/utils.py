"""The ``!function`` hooks of the task YAMLs in this directory: dataset loaders and per-document scoring.

lm-eval imports this file by path (next to the YAMLs); the package imports it as
``offprincipal.evaluation.tasks.utils``. Both copies call the same package functions.

lm-eval calls a ``custom_dataset`` with the task's ``metadata`` and ``dataset_kwargs`` as keyword
arguments; the metadata carries keys of its own (``version``, ``config_source``, and with the
CLI the model arguments), which the loaders ignore.
"""

from __future__ import annotations

import datasets

from offprincipal.evaluation import scoring
from offprincipal.evaluation.benchmarks import benchmark, load_rows


def math_docs(name: str, data_file=None, sha256=None) -> tuple[list[dict], dict]:
    """Uniform documents ``{id, problem, answer}`` of a math benchmark, and the data provenance.

    ``answer`` is the gold as a string with integral floats written as integers. Every gold
    must parse under math-verify, checked here so that a bad file fails before generation.
    """
    from math_verify import parse

    bench = benchmark(name)
    rows, provenance = load_rows(name, data_file, sha256)
    docs = []
    for row in rows:
        gold = scoring.normalize_gold(row[bench.answer_field])
        if not parse("\\boxed{" + gold + "}"):
            raise ValueError(f"benchmark {name!r}: math-verify cannot parse the gold answer {gold!r} "
                             f"of problem {row[bench.id_field]!r} in {provenance['path']}")
        docs.append({"id": str(row[bench.id_field]), "problem": row[bench.question_field], "answer": gold})
    return docs, provenance


def math_dataset(benchmark=None, data_file=None, sha256=None, **_task_metadata):
    if benchmark is None:
        raise ValueError("math task: dataset_kwargs.benchmark is not set (aime24, aime25, amc23 or math500)")
    docs, _ = math_docs(benchmark, data_file, sha256)
    return {"test": datasets.Dataset.from_list(docs)}


def toy_docs(datasets_dir, toy_task, split: str = "test") -> list[dict]:
    """Documents ``{id, prompt, answer}`` of a toy task's split (the prompt is unique, so it is the id)."""
    from offprincipal.toy.task import load_split, parse_task, split_path

    parse_task(toy_task)
    path = split_path(datasets_dir, toy_task, split)
    if not path.is_file():
        raise FileNotFoundError(f"toy task {toy_task!r}: split {split!r} not found at {path}")
    rows = load_split(datasets_dir, toy_task, split)
    if not rows:
        raise ValueError(f"toy task {toy_task!r}: split {split!r} at {path} is empty")
    docs = [{"id": r["prompt"], "prompt": r["prompt"], "answer": str(r["answer"])} for r in rows]
    if len({d["id"] for d in docs}) != len(docs):
        raise ValueError(f"toy task {toy_task!r}: split {split!r} at {path} repeats a prompt")
    return docs


def toy_dataset(datasets_dir=None, toy_task=None, split="test", **_task_metadata):
    if datasets_dir is None or toy_task is None:
        raise ValueError("toy task: datasets_dir and toy_task must be given (dataset_kwargs, or "
                         "--metadata '{\"datasets_dir\": ..., \"toy_task\": ...}')")
    return {"test": datasets.Dataset.from_list(toy_docs(datasets_dir, toy_task, split))}


def _responses(doc, results) -> list[str]:
    responses = results[0]
    if isinstance(responses, str):
        # lm-eval's default take_first filter hands over one string: the repeats were dropped
        raise ValueError(f"problem {doc.get('id')!r}: process_results got one response, not the list of "
                         "all repeats; the task needs a take_first_k filter with k = repeats")
    return list(responses)


def process_math_results(doc, results) -> dict:
    """avg@k of one problem under both scores (the mean correctness of its k responses)."""
    responses = _responses(doc, results)
    k = len(responses)
    return {
        "is_equiv_avg_at_k": sum(scoring.is_equiv_correct(doc["answer"], r) for r in responses) / k,
        "math_verify_avg_at_k": sum(scoring.math_verify_correct(doc["answer"], r) for r in responses) / k,
    }


def process_toy_results(doc, results) -> dict:
    responses = _responses(doc, results)
    return {"toy_verifier_avg_at_k": sum(scoring.toy_correct(doc, r) for r in responses) / len(responses)}
