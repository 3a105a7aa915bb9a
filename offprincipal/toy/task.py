"""Synthetic integer arithmetic with exactly checkable answers (the toy world's task family).

A *problem* is an arithmetic expression over non-negative integers with the operators
``+ - * %`` and parentheses, written with Python's precedence (``* %`` bind tighter than
``+ -``; equal precedence associates to the left), followed by ``=``::

    prompt   "(7+5)*3-4="
    solution "12*3-4=36-4=32"     # worked solution: the expression reduced step by step
    answer   "32"

A step of the worked solution evaluates, at once, every operation whose two operands are
already numbers; the last step is the bare answer. Each problem is stored as a dict
``{prompt, answer, solution, family, difficulty, task}``.

Families (each a distinct operator set) and difficulties (number of operations):

* ``add_sub``   ``+ -``; operands 0..99.
* ``mul_mix``   ``+ - *`` with at least one ``*``; operands 0..12.
* ``mod_chain`` ``+ - * %`` with at least one ``%``; operands 0..30, moduli 2..9 (the
  right operand of ``%`` is always a literal modulus).

Difficulty ``d`` means exactly ``d`` operations (``d`` = 1..4). Every intermediate value
must lie in ``0..MAX_VALUE``; other draws are rejected, so no step ever shows a negative
number. A *task* is one ``(family, difficulty)`` and is named ``f"{family}_d{difficulty}"``.

Completion format and the verifier
----------------------------------
The model is given the prompt (which ends in ``=``) and writes either the worked solution or
the bare answer, then the end-of-sequence token. :func:`extract_answer` reads a completion
as follows: cut it at the first end-of-sequence marker (``EOS_TEXT``) or newline; take the
text after the last ``=`` (the whole text if it has none); strip surrounding whitespace; the
result must be a (possibly signed) integer written with digits only (``-?[0-9]+``),
otherwise there is no answer. :func:`reward` is ``+1.0`` when that integer equals the
problem's answer and ``-1.0`` otherwise (DAPO's verifiable reward); :func:`is_correct` is
the boolean. The reference answer of a bare prompt string is recomputed by this module's
own evaluator (tests check it against Python's ``eval``).

Splits
------
:func:`build_datasets` writes, for every task, a ``train`` and a held-out ``test`` split
(default 1000 / 256 problems), and one ``pretrain.jsonl`` mixture (default 60 000 documents).
The splits are disjoint by prompt: a prompt is claimed by at most one split of one task, the
held-out sets first, so no held-out problem appears in any train split; the pretraining
corpus draws only unclaimed prompts, so it shares no problem with any split either (it may
repeat its own documents, as epochs would). The ``d1`` tasks of ``mul_mix`` (169 prompts)
and ``mod_chain`` (248) are small: each of their splits gets at most a quarter of the space.

The RL task (``RL_TASK``, ``mul_mix_d3``: three operations with ``*``, e.g.
``(11+3)*8=14*8=112``) is the one RL and SFT train on (its ``train`` split) and the base's
headroom is measured on (its ``test`` split). The pretraining mixture
(``DEFAULT_PRETRAIN_MIXTURE``) is dominated by ``d1``/``d2`` problems of all families, with a
smaller share of ``d3``; ``d4`` is never pretrained on. A fifth of the ``d2`` pretraining
documents show the bare answer instead of the worked solution (``d1`` solutions are bare
answers; ``d3`` documents always show the worked solution).
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from offprincipal.io import atomic_path, write_json

#: end-of-sequence marker as text (the tokenizer's EOS token)
EOS_TEXT = "</s>"
#: every intermediate value must lie in 0..MAX_VALUE
MAX_VALUE = 999
#: the task RL and SFT run on by default; its held-out split measures the base's headroom
RL_TASK = "mul_mix_d3"
#: the manifest written by :func:`build_datasets`
MANIFEST_NAME = "manifest.json"
PRETRAIN_NAME = "pretrain.jsonl"

_PREC = {"+": 1, "-": 1, "*": 2, "%": 2}


@dataclass(frozen=True)
class Family:
    """An operator set and operand ranges; ``required`` must occur in every problem."""

    ops: tuple[str, ...]
    operand_max: int
    required: str | None = None
    modulus_range: tuple[int, int] = (2, 9)


FAMILIES: dict[str, Family] = {
    "add_sub": Family(ops=("+", "-"), operand_max=99),
    "mul_mix": Family(ops=("+", "-", "*"), operand_max=12, required="*"),
    "mod_chain": Family(ops=("+", "-", "*", "%"), operand_max=30, required="%"),
}
DIFFICULTIES = (1, 2, 3, 4)


def task_name(family: str, difficulty: int) -> str:
    return f"{family}_d{int(difficulty)}"


def parse_task(task: str) -> tuple[str, int]:
    family, _, d = task.rpartition("_d")
    if family not in FAMILIES or not d.isdigit() or int(d) not in DIFFICULTIES:
        raise ValueError(f"unknown task {task!r}")
    return family, int(d)


ALL_TASKS = tuple(task_name(f, d) for f in FAMILIES for d in DIFFICULTIES)

# ----------------------------------------------------------------------------- expressions
# A node is an int (a literal) or a tuple (op, left, right).


def _render(node, parent_prec: int = 0, right_child: bool = False) -> str:
    if isinstance(node, int):
        return str(node)
    op, left, right = node
    prec = _PREC[op]
    text = _render(left, prec, False) + op + _render(right, prec, True)
    if prec < parent_prec or (right_child and prec == parent_prec):
        text = f"({text})"
    return text


def render(node) -> str:
    """The expression text of a tree with the fewest parentheses Python's grammar needs."""
    return _render(node)


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "%":
        if b == 0:
            raise ZeroDivisionError("modulo by zero")
        return a % b  # Python's floored modulo
    raise ValueError(op)


def _value(node) -> int:
    if isinstance(node, int):
        return node
    op, left, right = node
    return _apply(op, _value(left), _value(right))


_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")


def parse(expr: str):
    """Parse an expression over ``+ - * %`` and parentheses into a tree (no unary minus).

    Precedence and associativity are Python's, so ``_value(parse(e)) == eval(e)``.
    """
    tokens = []
    for num, sym in _TOKEN.findall(expr.strip()):
        if num:
            tokens.append(int(num))
        elif sym in "+-*%()":
            tokens.append(sym)
        elif not sym.isspace():
            raise ValueError(f"unexpected character {sym!r} in {expr!r}")
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom():
        tok = take() if pos < len(tokens) else None
        if isinstance(tok, int):
            return tok
        if tok == "(":
            node = expression()
            if take() != ")":
                raise ValueError(f"unbalanced parentheses in {expr!r}")
            return node
        raise ValueError(f"malformed expression {expr!r}")

    def term():
        node = atom()
        while peek() in ("*", "%"):
            op = take()
            node = (op, node, atom())
        return node

    def expression():
        node = term()
        while peek() in ("+", "-"):
            op = take()
            node = (op, node, term())
        return node

    try:
        tree = expression()
    except IndexError:
        raise ValueError(f"malformed expression {expr!r}") from None
    if pos != len(tokens):
        raise ValueError(f"trailing input in {expr!r}")
    return tree


def evaluate(expr: str) -> int:
    """The integer value of an expression (Python semantics; no ``eval``)."""
    return _value(parse(expr))


def _reduce_ready(node):
    """Evaluate every operation whose operands are both literals (one solution step)."""
    if isinstance(node, int):
        return node
    op, left, right = node
    if isinstance(left, int) and isinstance(right, int):
        return _apply(op, left, right)
    return (op, _reduce_ready(left), _reduce_ready(right))


def worked_steps(expr: str) -> list[str]:
    """The successive reduced expressions, ending with the bare answer."""
    node = parse(expr)
    steps = []
    while not isinstance(node, int):
        node = _reduce_ready(node)
        steps.append(render(node))
    if not steps:
        steps.append(str(node))
    return steps


def _intermediates(node, out: list[int]) -> int:
    if isinstance(node, int):
        out.append(node)
        return node
    op, left, right = node
    v = _apply(op, _intermediates(left, out), _intermediates(right, out))
    out.append(v)
    return v


# ----------------------------------------------------------------------------- problems


def _problem_from_tree(tree, family: str | None, difficulty: int | None) -> dict:
    steps = []
    node = tree
    while not isinstance(node, int):
        node = _reduce_ready(node)
        steps.append(render(node))
    if not steps:
        steps.append(str(node))
    return {
        "prompt": render(tree) + "=",
        "answer": steps[-1],
        "solution": "=".join(steps),
        "family": family,
        "difficulty": difficulty,
        "task": task_name(family, difficulty) if family and difficulty else None,
    }


def make_problem(expr: str, family: str | None = None, difficulty: int | None = None) -> dict:
    """A problem dict for an expression (prompt = expression + '=')."""
    return _problem_from_tree(parse(expr), family, difficulty)


def _randint(rng: random.Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo + 1))


def _random_tree(rng: random.Random, fam: Family, n_ops: int):
    if n_ops == 0:
        return _randint(rng, 0, fam.operand_max)
    op = fam.ops[int(rng.random() * len(fam.ops))]
    if op == "%":
        return (op, _random_tree(rng, fam, n_ops - 1), _randint(rng, *fam.modulus_range))
    n_left = _randint(rng, 0, n_ops - 1)
    return (op, _random_tree(rng, fam, n_left), _random_tree(rng, fam, n_ops - 1 - n_left))


def _ops_of(node) -> set[str]:
    if isinstance(node, int):
        return set()
    return {node[0]} | _ops_of(node[1]) | _ops_of(node[2])


def _sample_tree(rng: random.Random, family: str, difficulty: int, max_tries: int = 1000):
    fam = FAMILIES[family]
    for _ in range(max_tries):
        tree = _random_tree(rng, fam, difficulty)
        if fam.required and fam.required not in _ops_of(tree):
            continue
        vals: list[int] = []
        try:
            _intermediates(tree, vals)
        except ZeroDivisionError:
            continue
        if min(vals) < 0 or max(vals) > MAX_VALUE:
            continue
        return tree
    raise RuntimeError(f"could not sample a valid {family} d{difficulty} problem")


def sample_problem(rng: random.Random, family: str, difficulty: int) -> dict:
    """One random problem of a task (rejection-sampled until all values lie in 0..MAX_VALUE)."""
    return _problem_from_tree(_sample_tree(rng, family, difficulty), family, difficulty)


def generate_problems(
    family: str,
    difficulty: int,
    n: int,
    seed: int,
    exclude: set[str] | None = None,
    *,
    unique: bool = True,
    max_misses: int = 2000,
) -> list[dict]:
    """``n`` problems of a task whose prompts are not in ``exclude``.

    With ``unique`` (splits) the prompts are distinct and are added to ``exclude`` in place;
    generation stops early (returning fewer) after ``max_misses`` consecutive draws of
    claimed prompts. Without it (the pretraining corpus) a prompt may repeat, as in epochs,
    but still never one in ``exclude``.
    """
    rng = random.Random(f"{family}|{difficulty}|{seed}")
    exclude = set() if exclude is None else exclude
    out: list[dict] = []
    misses = 0
    while len(out) < n and misses < max_misses:
        tree = _sample_tree(rng, family, difficulty)
        prompt = render(tree) + "="
        if prompt in exclude:
            misses += 1
            continue
        misses = 0
        if unique:
            exclude.add(prompt)
        out.append(_problem_from_tree(tree, family, difficulty))
    return out


def pool_size(family: str, difficulty: int) -> int | None:
    """The exact number of distinct prompts of a difficulty-1 task; None (large) otherwise."""
    if difficulty != 1:
        return None
    fam = FAMILIES[family]
    prompts = set()
    for op in fam.ops:
        if fam.required and op != fam.required:
            continue
        rights = range(fam.modulus_range[0], fam.modulus_range[1] + 1) if op == "%" else range(fam.operand_max + 1)
        for a in range(fam.operand_max + 1):
            for b in rights:
                if 0 <= _apply(op, a, b) <= MAX_VALUE:
                    prompts.add(f"{a}{op}{b}")
    return len(prompts)


# ----------------------------------------------------------------------------- verifier

_INT = re.compile(r"-?[0-9]+")


def extract_answer(completion: str) -> str | None:
    """The final answer of a completion (see the module docstring), or None."""
    text = completion.split(EOS_TEXT, 1)[0].split("\n", 1)[0]
    text = text.rsplit("=", 1)[-1].strip()
    if not _INT.fullmatch(text):
        return None
    return str(int(text))


def reference_answer(prompt_or_problem) -> str:
    """The answer of a problem dict, or of a prompt string (recomputed)."""
    if isinstance(prompt_or_problem, Mapping):
        return str(prompt_or_problem["answer"])
    expr = str(prompt_or_problem).strip()
    if expr.endswith("="):
        expr = expr[:-1]
    return str(evaluate(expr))


def is_correct(prompt_or_problem, completion: str) -> bool:
    got = extract_answer(completion)
    return got is not None and got == reference_answer(prompt_or_problem)


def reward(prompt_or_problem, completion: str) -> float:
    """DAPO's verifiable reward: +1.0 for a correct final answer, -1.0 otherwise."""
    return 1.0 if is_correct(prompt_or_problem, completion) else -1.0


def reward_func(completions, answer=None, prompts=None, **_ignored) -> list[float]:
    """A TRL-style reward function: ``completions`` (strings, or chat messages) against the
    dataset's ``answer`` column (or, without one, the answers recomputed from ``prompts``)."""
    out = []
    for i, comp in enumerate(completions):
        if not isinstance(comp, str):  # conversational: [{"role": ..., "content": ...}]
            comp = comp[-1]["content"] if comp else ""
        ref = {"answer": answer[i]} if answer is not None else prompts[i]
        if not isinstance(ref, (str, Mapping)):
            ref = ref[-1]["content"]
        out.append(reward(ref, comp))
    return out


# ----------------------------------------------------------------------------- datasets

#: default split sizes per task (a small task space may yield fewer; the manifest says)
DEFAULT_TRAIN_SIZE = 1000
DEFAULT_TEST_SIZE = 256
#: default number of pretraining documents
DEFAULT_PRETRAIN_SIZE = 60000
#: pretraining mixture: task -> weight. Easy problems dominate; the RL task's difficulty
#: (mul_mix_d3) and the other hard levels get a smaller share; d4 is never seen.
DEFAULT_PRETRAIN_MIXTURE = {
    "add_sub_d1": 3.0,
    "add_sub_d2": 3.0,
    "add_sub_d3": 1.0,
    "mul_mix_d1": 3.0,
    "mul_mix_d2": 3.0,
    "mul_mix_d3": 1.5,
    "mod_chain_d1": 2.0,
    "mod_chain_d2": 2.0,
    "mod_chain_d3": 0.5,
}
#: share of pretraining documents of difficulty <= ANSWER_ONLY_MAX_DIFFICULTY that show the
#: bare answer instead of the worked solution (harder ones always show the worked solution)
DEFAULT_ANSWER_ONLY_FRACTION = 0.2
ANSWER_ONLY_MAX_DIFFICULTY = 2


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split_path(datasets_dir: str | os.PathLike, task: str, split: str) -> Path:
    return Path(datasets_dir) / task / f"{split}.jsonl"


def load_split(datasets_dir: str | os.PathLike, task: str = RL_TASK, split: str = "test") -> list[dict]:
    """The problems of one split (``train`` or ``test``) of a task."""
    return read_jsonl(split_path(datasets_dir, task, split))


def load_pretrain(datasets_dir: str | os.PathLike) -> list[dict]:
    return read_jsonl(Path(datasets_dir) / PRETRAIN_NAME)


def _pretrain_counts(total: int, mixture: Mapping[str, float]) -> dict[str, int]:
    weight = sum(mixture.values())
    counts = {t: int(total * w / weight) for t, w in mixture.items()}
    # hand the rounding remainder to the largest weights, deterministically
    for t in sorted(mixture, key=lambda t: (-mixture[t], t))[: total - sum(counts.values())]:
        counts[t] += 1
    return counts


def build_datasets(
    out_dir: str | os.PathLike,
    seed: int = 0,
    *,
    tasks: Iterable[str] = ALL_TASKS,
    train_size: int = DEFAULT_TRAIN_SIZE,
    test_size: int = DEFAULT_TEST_SIZE,
    test_sizes: Mapping[str, int] | None = None,
    pretrain_size: int = DEFAULT_PRETRAIN_SIZE,
    pretrain_mixture: Mapping[str, float] | None = None,
    answer_only_fraction: float = DEFAULT_ANSWER_ONLY_FRACTION,
    rl_task: str = RL_TASK,
) -> dict:
    """Write every task's ``train``/``test`` JSONL and ``pretrain.jsonl``; return the manifest.

    Layout: ``out_dir/<task>/{train,test}.jsonl``, ``out_dir/pretrain.jsonl``,
    ``out_dir/manifest.json``. Every file is written atomically and is a deterministic
    function of the arguments. ``test_sizes`` overrides ``test_size`` per task (e.g. a large
    held-out set for the RL task alone, leaving every other split and most of the pretraining
    corpus as they are). Pretraining documents carry ``text`` (prompt + solution or
    answer + EOS) besides the problem fields.
    """
    out = Path(out_dir)
    mixture = dict(DEFAULT_PRETRAIN_MIXTURE if pretrain_mixture is None else pretrain_mixture)
    tasks = list(dict.fromkeys(list(tasks) + [rl_task] + list(mixture)))
    for t in tasks:
        parse_task(t)
    claimed: set[str] = set()
    splits: dict[str, dict[str, list[dict]]] = {t: {} for t in tasks}
    # held-out sets first: nothing claimed later can collide with them. A task with a small
    # space of prompts gives at most a quarter of it to each split (the rest to pretraining).
    sizes = dict(test_sizes or {})
    for t, n in sizes.items():
        parse_task(t)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"test_sizes[{t!r}] must be a positive integer, got {n!r}")
    for split, size, offset in (("test", test_size, 1), ("train", train_size, 2)):
        for t in tasks:
            fam, d = parse_task(t)
            if split == "test":
                size = sizes.get(t, test_size)
            pool = pool_size(fam, d)
            n = size if pool is None else min(size, pool // 4)
            splits[t][split] = generate_problems(fam, d, n, seed * 1000 + offset, claimed)
    pretrain: list[dict] = []
    counts = _pretrain_counts(pretrain_size, mixture)
    for t in sorted(counts):
        fam, d = parse_task(t)
        pretrain += generate_problems(fam, d, counts[t], seed * 1000 + 3, claimed, unique=False)
    rng = random.Random(f"pretrain-order|{seed}")
    rng.shuffle(pretrain)
    for doc in pretrain:
        # bare answers only for easier problems (difficulty <= ANSWER_ONLY_MAX_DIFFICULTY);
        # d1 solutions are bare answers anyway. One draw per document keeps the order fixed.
        answer_only = rng.random() < answer_only_fraction and doc["difficulty"] <= ANSWER_ONLY_MAX_DIFFICULTY
        body = doc["answer"] if answer_only else doc["solution"]
        doc["text"] = doc["prompt"] + body + EOS_TEXT

    files = {}
    for t in tasks:
        for split, rows in splits[t].items():
            path = split_path(out, t, split)
            write_jsonl(path, rows)
            files[f"{t}/{split}"] = {"path": str(path.relative_to(out)), "n": len(rows)}
    write_jsonl(out / PRETRAIN_NAME, pretrain)
    by_task: dict[str, int] = {}
    for doc in pretrain:
        by_task[doc["task"]] = by_task.get(doc["task"], 0) + 1
    manifest = {
        "seed": seed,
        "rl_task": rl_task,
        "tasks": tasks,
        "families": {k: {"ops": list(v.ops), "operand_max": v.operand_max, "required": v.required,
                         "modulus_range": list(v.modulus_range)} for k, v in FAMILIES.items()},
        "max_value": MAX_VALUE,
        "eos_text": EOS_TEXT,
        "splits": files,
        "pretrain": {"path": PRETRAIN_NAME, "n": len(pretrain), "by_task": dict(sorted(by_task.items())),
                     "mixture": mixture, "answer_only_fraction": answer_only_fraction,
                     "answer_only_max_difficulty": ANSWER_ONLY_MAX_DIFFICULTY},
        "sizes": {"train": train_size, "test": test_size, "test_per_task": dict(sorted(sizes.items())),
                  "pretrain": pretrain_size},
        "disjoint": "prompts are unique across all splits of all tasks and the pretraining corpus",
    }
    write_json(out / MANIFEST_NAME, manifest)
    return manifest
