"""Accuracy statistics over problems: avg@k, unbiased pass@k, standard error, bootstrap intervals.

The unit of resampling is the *problem*: the k samples of one problem are correlated (same
question), so intervals resample problems, keeping each problem's samples together. A
comparison of two checkpoints on the same problems resamples the problem indices jointly
(paired bootstrap), which removes the between-problem difficulty variance both share.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: resamples per bootstrap chunk; bounds memory at about chunk x problems indices
_CHUNK = 1000


def per_problem_accuracy(correct: Sequence[Sequence[float]]) -> np.ndarray:
    """The mean correctness of each problem's samples (problems may have different k)."""
    out = np.empty(len(correct), dtype=np.float64)
    for i, row in enumerate(correct):
        row = np.asarray(row, dtype=np.float64)
        if row.size == 0:
            raise ValueError(f"problem {i} has no samples")
        out[i] = row.mean()
    return out


def avg_at_k(correct: Sequence[Sequence[float]]) -> float:
    """avg@k: the mean over problems of each problem's mean correctness over its k samples."""
    if len(correct) == 0:
        raise ValueError("avg@k of no problems")
    return float(per_problem_accuracy(correct).mean())


def pass_at_k(n, c, k: int) -> np.ndarray | float:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)`` per problem.

    ``n`` samples of which ``c`` are correct; ``n`` and ``c`` may be arrays (one entry per
    problem). Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which avoids huge binomials.
    """
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
    c_arr = np.atleast_1d(np.asarray(c, dtype=np.int64))
    if n_arr.shape != c_arr.shape:
        raise ValueError(f"n and c differ in shape: {n_arr.shape} vs {c_arr.shape}")
    if k < 1 or np.any(n_arr < k):
        raise ValueError(f"pass@{k} needs k >= 1 and at least k samples per problem (n = {n_arr.tolist()})")
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("the correct counts must lie in 0..n")
    out = np.empty(n_arr.shape, dtype=np.float64)
    for i, (ni, ci) in enumerate(zip(n_arr.tolist(), c_arr.tolist())):
        if ni - ci < k:
            out[i] = 1.0
        else:
            out[i] = 1.0 - np.prod(1.0 - k / np.arange(ni - ci + 1, ni + 1, dtype=np.float64))
    return float(out[0]) if np.ndim(n) == 0 and np.ndim(c) == 0 else out


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean over problems (sample std with ddof 1, over sqrt(n)); NaN for n < 2."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float("nan")
    return float(x.std(ddof=1) / np.sqrt(x.size))


def _bootstrap_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of the rows of ``x``; x is (n,) or (n, m)."""
    n = x.shape[0]
    means = np.empty((n_boot,) + x.shape[1:], dtype=np.float64)
    for start in range(0, n_boot, _CHUNK):
        stop = min(start + _CHUNK, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    return means


def _interval(means: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 10000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over problems (problems resampled with replacement)."""
    _check(n_boot, level)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap needs a non-empty 1-D array of per-problem values, got shape {x.shape}")
    return _interval(_bootstrap_means(x, n_boot, np.random.default_rng(seed)), level)


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Mean difference ``a - b`` over the same problems and its paired 95% percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` must be the same problem. Each resample draws problem indices once and
    uses them for both, so the interval reflects only how the difference varies over problems.
    """
    _check(n_boot, 0.95)
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"paired values must be two non-empty 1-D arrays of one length, got {x.shape} and {y.shape}")
    means = _bootstrap_means(x - y, n_boot, np.random.default_rng(seed))
    return {"diff": float((x - y).mean()), "ci95": list(_interval(means, 0.95)), "n_problems": int(x.size)}


def unpaired_bootstrap_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10000, seed: int = 0) -> dict:
    """The same difference with ``a`` and ``b`` resampled independently (ignores the pairing).

    For comparison only: on paired data it overstates the uncertainty whenever the two
    checkpoints find the same problems hard.
    """
    _check(n_boot, 0.95)
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.size == 0 or y.size == 0:
        raise ValueError("unpaired values must be two non-empty 1-D arrays")
    rng = np.random.default_rng(seed)
    means = _bootstrap_means(x, n_boot, rng) - _bootstrap_means(y, n_boot, rng)
    return {"diff": float(x.mean() - y.mean()), "ci95": list(_interval(means, 0.95)), "n_problems": int(x.size)}


def stratified_bootstrap_task_mean(per_task: Sequence[Sequence[float]], *, n_boot: int = 10000, seed: int = 0,
                                   level: float = 0.95) -> tuple[float, float]:
    """Interval of the mean over tasks of each task's mean over problems (the paper's "average"
    column): each task's problems are resampled on their own, so a 30-problem task weighs as
    much as a 500-problem one, as in the point estimate."""
    _check(n_boot, level)
    tasks = [np.asarray(t, dtype=np.float64) for t in per_task]
    if not tasks or any(t.ndim != 1 or t.size == 0 for t in tasks):
        raise ValueError("every task needs a non-empty 1-D array of per-problem values")
    rng = np.random.default_rng(seed)
    means = np.mean([_bootstrap_means(t, n_boot, rng) for t in tasks], axis=0)
    return _interval(means, level)


def paired_bootstrap_task_mean(pairs: Sequence[tuple[Sequence[float], Sequence[float]]], *, n_boot: int = 10000,
                               seed: int = 0) -> dict:
    """The mean over tasks of (a - b) per task, each task's problems resampled jointly for a and b
    (paired within a task, tasks resampled independently of each other)."""
    diffs = []
    for a, b in pairs:
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1 or x.size == 0:
            raise ValueError(f"paired values must be two non-empty 1-D arrays of one length, got {x.shape}, {y.shape}")
        diffs.append(x - y)
    lo, hi = stratified_bootstrap_task_mean(diffs, n_boot=n_boot, seed=seed)
    return {"diff": float(np.mean([d.mean() for d in diffs])), "ci95": [lo, hi],
            "n_problems": int(sum(d.size for d in diffs))}
