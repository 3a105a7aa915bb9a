"""The +1/-1 verifiable reward, as verl's custom reward function (:mod:`.verl_reward`).

verl 0.9.1 loads :mod:`offprincipal.training.verl_reward` by file path
(``reward.custom_reward_function.path``, name ``compute_score``) inside its reward workers and
calls
``compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)`` once per
response. The ``dapo`` reward manager adds DAPO's overlong penalty on top of the returned
``score`` (``verl/experimental/reward_loop/reward_manager/dapo.py``): it is not computed here.

* Math data: Math-Verify, set up as verl's own ``verl.utils.reward_score.math_verify`` does it
  (ground truth wrapped in ``\\boxed{}`` and parsed as LaTeX; the response parsed as LaTeX and
  plain expressions; correct if any parse of the response verifies against the ground truth),
  in a spawned worker process so Math-Verify's signal-based timeouts work off the main thread.
  Unlike verl's wrapper, which turns *any* failure into a score of 0, only a timeout counts as
  a wrong answer here: a broken worker pool raises, so a run cannot train on a reward that is
  silently -1 everywhere.
* Toy data (``data_source`` ``toy/<task>``): the toy world's exact verifier.

The return value is ``{"score": ±1.0, "acc": 1.0 or 0.0}``; verl keeps ``acc`` as reward info
(usable as ``algorithm.filter_groups.metric``).
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeoutError

TOY_PREFIX = "toy/"
#: seconds a single check may take before the answer counts as wrong
TIMEOUT_SECONDS = 30.0
WORKERS = 4

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def math_verify_correct(solution_str: str, ground_truth: str) -> bool:
    """Math-Verify's verdict in this process (used by the worker; timeouts raise)."""
    from math_verify.grader import verify
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig, parse

    gold = parse("\\boxed{" + ground_truth + "}", (LatexExtractionConfig(),))
    pred = parse(solution_str, (ExprExtractionConfig(), LatexExtractionConfig()))
    return bool(gold) and bool(pred) and any(verify(g, p) for g in gold for p in pred)


def _is_timeout(err: BaseException) -> bool:
    if isinstance(err, FuturesTimeoutError):
        return True
    try:
        from math_verify.errors import TimeoutException
    except ImportError:  # pragma: no cover - math-verify is a dependency of the training env
        return False
    return isinstance(err, TimeoutException)


def is_correct(data_source: str, solution_str: str, ground_truth: str) -> bool:
    if str(data_source).startswith(TOY_PREFIX):
        from offprincipal.toy.task import reward

        return reward({"answer": int(ground_truth)}, solution_str) > 0
    future = _get_pool().submit(math_verify_correct, solution_str, str(ground_truth))
    try:
        return future.result(timeout=TIMEOUT_SECONDS)
    except Exception as err:
        if _is_timeout(err):
            return False
        raise


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    correct = is_correct(data_source, solution_str, ground_truth)
    return {"score": 1.0 if correct else -1.0, "acc": 1.0 if correct else 0.0}
