"""Cross-run analyses of update masks: Jaccard, consensus, row/column update ratios.

All work on the bit-packed masks written by the compare pass, so R runs of a 1.5B model
cost popcounts, not unpacked boolean arrays.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from offprincipal.metrics.masks import MaskFile, popcount


def bernoulli_jaccard(p: float, q: float) -> float:
    """Expected Jaccard of two independent Bernoulli masks of densities p and q."""
    denom = p + q - p * q
    return p * q / denom if denom > 0 else float("nan")


def jaccard_table(masks: Mapping[str, MaskFile], names: Sequence[str]) -> pd.DataFrame:
    """Pairwise Jaccard over the tensors ``names`` for every pair of runs.

    Two aggregates, since the paper does not say which it uses: ``jaccard_pooled`` =
    Σ|A∩B| / Σ|A∪B| over tensors, with ``baseline_pooled`` = Σ n·pq / Σ n·(p+q−pq); and
    ``jaccard_mean`` / ``baseline_mean`` = the unweighted means of per-tensor values.
    """
    runs = list(masks)
    counts: dict[str, dict[str, int]] = {r: {} for r in runs}
    rows = []
    for a, b in itertools.combinations(runs, 2):
        inter_sum = union_sum = 0
        exp_inter = exp_union = 0.0
        per_tensor_j: list[float] = []
        per_tensor_b: list[float] = []
        for name in names:
            bits_a, bits_b = masks[a].bits(name), masks[b].bits(name)
            n = int(np.prod(masks[a].shape(name)))
            ca = counts[a].setdefault(name, popcount(bits_a))
            cb = counts[b].setdefault(name, popcount(bits_b))
            inter = popcount(bits_a & bits_b)
            union = ca + cb - inter
            p, q = ca / n, cb / n
            inter_sum += inter
            union_sum += union
            exp_inter += n * p * q
            exp_union += n * (p + q - p * q)
            per_tensor_j.append(inter / union if union else float("nan"))
            per_tensor_b.append(bernoulli_jaccard(p, q))
        rows.append(
            {
                "run_a": a,
                "run_b": b,
                "jaccard_pooled": inter_sum / union_sum if union_sum else float("nan"),
                "baseline_pooled": exp_inter / exp_union if exp_union else float("nan"),
                "jaccard_mean": float(np.nanmean(per_tensor_j)) if per_tensor_j else float("nan"),
                "baseline_mean": float(np.nanmean(per_tensor_b)) if per_tensor_b else float("nan"),
                "n_tensors": len(names),
            }
        )
    return pd.DataFrame(rows)


def jaccard_matrix(table: pd.DataFrame, runs: Sequence[str], column: str = "jaccard_pooled") -> pd.DataFrame:
    """Square symmetric matrix (diagonal 1) from ``jaccard_table`` rows."""
    mat = pd.DataFrame(np.eye(len(runs)), index=list(runs), columns=list(runs))
    for row in table.itertuples():
        mat.loc[row.run_a, row.run_b] = mat.loc[row.run_b, row.run_a] = getattr(row, column)
    return mat


def consensus_counts(masks: Iterable[MaskFile], name: str) -> np.ndarray:
    """Per entry of tensor ``name``: how many runs updated it (0..R)."""
    total = None
    for mf in masks:
        m = mf.mask(name).astype(np.uint8)
        total = m if total is None else total + m
    if total is None:
        raise ValueError("consensus needs at least one run")
    return total


def consensus_histogram(counts: np.ndarray, densities: Sequence[float]) -> pd.DataFrame:
    """Observed share of entries updated by exactly c of R runs, beside the share expected if
    runs updated entries independently with their own densities (Poisson-binomial)."""
    expected = np.array([1.0])
    for p in densities:
        expected = np.convolve(expected, [1.0 - p, p])
    observed = np.bincount(counts.reshape(-1), minlength=len(densities) + 1) / counts.size
    return pd.DataFrame({"runs_updated": np.arange(len(expected)), "observed": observed, "independent": expected})


def row_col_ratios(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of updated entries per row (output unit) and per column (input feature),
    in torch's ``[out, in]`` layout."""
    m = mask.astype(np.float32)
    return m.mean(axis=1), m.mean(axis=0)
