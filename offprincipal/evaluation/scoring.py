"""Answer extraction and correctness of one response: Evalchemy's check, math-verify, the toy verifier.

Primary score (``is_equiv``), Evalchemy's definition exactly: the answer is the content of
the response's last ``\\boxed{}`` (or ``\\fbox{}``), found with lm-eval's brace-matching
``last_boxed_only_string`` / ``remove_boxed`` over the whole response (thinking included),
or ``""`` when there is none; it is correct when
``lm_eval.tasks.hendrycks_math.utils.is_equiv(gold, answer)`` holds (Hendrycks
``strip_string`` normalisation, then string equality). One deliberate addition: a gold
answer that is an integral float (``27.0``, ``"27.0"``, as some AMC23 copies store them) is
written as the integer (``"27"``) first, because ``is_equiv("27.0", "27")`` is false and
Evalchemy's own AMC23 golds are ints.

Secondary score (``math_verify``), clearly not Evalchemy's: math-verify's
``verify(parse("\\boxed{gold}"), parse(target))`` where ``target`` is the response's last
``\\boxed{...}`` (the same answer the primary score reads) or, when the response has none,
the whole response (math-verify then extracts LaTeX or a plain expression itself). It
accepts equal values in other spellings (``27.0`` for ``27``, ``\\{3\\}``, ``\\text{10}``) and
unboxed answers, so the gap to the primary score measures strictness and missing boxes.
The last box is taken explicitly because math-verify alone prefers an earlier box when a
response boxes several values.

Results are memoised on ``(gold, response)``: lm-eval's ``process_results`` and the result
writer score the same strings, and math-verify is the slow part.
"""

from __future__ import annotations

import functools
import re
import threading

_INTEGRAL_FLOAT = re.compile(r"^\s*([+-]?\d+)\.0*\s*$")


def normalize_gold(gold) -> str:
    """The gold answer as a string; an integral float (27.0 or "27.0") becomes "27"."""
    if isinstance(gold, bool):
        raise TypeError(f"gold answer {gold!r} is a bool, not an answer")
    if isinstance(gold, float) and gold.is_integer():
        return str(int(gold))
    text = str(gold)
    m = _INTEGRAL_FLOAT.match(text)
    return str(int(m.group(1))) if m else text


def extract_boxed(response: str) -> str:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` of a response, or ``""``."""
    from lm_eval.tasks.hendrycks_math.utils import last_boxed_only_string, remove_boxed

    try:
        return remove_boxed(last_boxed_only_string(response))
    except Exception:  # Evalchemy returns "" on any failure (no box, unbalanced braces, \fbox)
        return ""


@functools.lru_cache(maxsize=1 << 16)
def is_equiv_correct(gold: str, response: str) -> bool:
    """Evalchemy's correctness: ``is_equiv(gold, last boxed answer)``."""
    from lm_eval.tasks.hendrycks_math.utils import is_equiv

    return bool(is_equiv(normalize_gold(gold), extract_boxed(response)))


@functools.lru_cache(maxsize=1 << 16)
def math_verify_correct(gold: str, response: str) -> bool:
    """math-verify's correctness of a response against ``\\boxed{gold}`` (secondary score)."""
    from math_verify import parse, verify

    # math-verify's timeouts use signal.alarm, which works only in the main thread
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse("\\boxed{" + normalize_gold(gold) + "}", parsing_timeout=timeout)
    if not gold_parsed:
        raise ValueError(f"math-verify cannot parse the gold answer {gold!r}")
    pred = parse(math_verify_target(response), parsing_timeout=timeout)
    return bool(verify(gold_parsed, pred, timeout_seconds=timeout))


def math_verify_target(response: str) -> str:
    """What the secondary score parses: the last ``\\boxed{...}`` of a response, else the whole response."""
    from lm_eval.tasks.hendrycks_math.utils import last_boxed_only_string

    boxed = last_boxed_only_string(response)
    return response if boxed is None else boxed


def toy_correct(problem: dict, response: str) -> bool:
    """The toy world's verifier (:func:`offprincipal.toy.task.is_correct`)."""
    from offprincipal.toy.task import is_correct

    return bool(is_correct(problem, response))


def toy_extract(response: str) -> str:
    from offprincipal.toy.task import extract_answer

    got = extract_answer(response)
    return "" if got is None else got


def clear_cache() -> None:
    is_equiv_correct.cache_clear()
    math_verify_correct.cache_clear()
