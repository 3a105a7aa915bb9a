"""Jaccard with its Bernoulli baseline, consensus and row/column ratios."""

import numpy as np
import pytest
import torch

from offprincipal.metrics.crossrun import (
    bernoulli_jaccard,
    consensus_counts,
    consensus_histogram,
    jaccard_matrix,
    jaccard_table,
    row_col_ratios,
)
from offprincipal.metrics.masks import MaskFile, mask_writer


def write_runs(tmp_path, masks_per_run):
    files = {}
    for run, masks in masks_per_run.items():
        with mask_writer(tmp_path / f"{run}.npz") as w:
            for name, m in masks.items():
                w.add(name, torch.from_numpy(m))
        files[run] = MaskFile(tmp_path / f"{run}.npz")
    return files


def test_independent_random_masks_sit_at_the_bernoulli_baseline(tmp_path):
    rng = np.random.default_rng(0)
    densities = {"r1": 0.3, "r2": 0.5, "r3": 0.7}
    runs = {r: {"w": rng.random((300, 300)) < p, "b": rng.random(1000) < p} for r, p in densities.items()}
    table = jaccard_table(write_runs(tmp_path, runs), ["w", "b"])
    assert len(table) == 3
    for row in table.itertuples():
        expected = bernoulli_jaccard(densities[row.run_a], densities[row.run_b])
        assert row.baseline_pooled == pytest.approx(expected, abs=0.01)
        assert row.jaccard_pooled == pytest.approx(expected, abs=0.01)


def test_jaccard_against_python_sets(tmp_path):
    rng = np.random.default_rng(1)
    a = {"w": rng.random((17, 9)) < 0.4}
    b = {"w": (rng.random((17, 9)) < 0.4) | a["w"]}  # b ⊇ a: overlapping footprint
    table = jaccard_table(write_runs(tmp_path, {"a": a, "b": b}), ["w"])
    sa, sb = set(np.flatnonzero(a["w"])), set(np.flatnonzero(b["w"]))
    assert table.loc[0, "jaccard_pooled"] == pytest.approx(len(sa & sb) / len(sa | sb))
    assert table.loc[0, "jaccard_pooled"] > table.loc[0, "baseline_pooled"]
    mat = jaccard_matrix(table, ["a", "b"])
    assert mat.loc["a", "b"] == mat.loc["b", "a"] == table.loc[0, "jaccard_pooled"]
    assert mat.loc["a", "a"] == 1.0


def test_consensus_counts_and_poisson_binomial_expectation(tmp_path):
    rng = np.random.default_rng(2)
    ps = [0.2, 0.5, 0.9]
    runs = {f"r{i}": {"w": rng.random((200, 200)) < p} for i, p in enumerate(ps)}
    files = write_runs(tmp_path, runs)
    counts = consensus_counts(files.values(), "w")
    np.testing.assert_array_equal(counts, sum(m["w"].astype(np.uint8) for m in runs.values()))
    hist = consensus_histogram(counts, ps)
    # all three runs: 0.2*0.5*0.9 = 0.09; none: 0.8*0.5*0.1 = 0.04
    assert hist.loc[3, "independent"] == pytest.approx(0.09)
    assert hist.loc[0, "independent"] == pytest.approx(0.04)
    np.testing.assert_allclose(hist["observed"], hist["independent"], atol=0.01)


def test_row_and_column_ratios():
    m = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    rows, cols = row_col_ratios(m)
    np.testing.assert_allclose(rows, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(cols, [2 / 3, 1 / 3, 1 / 3, 2 / 3])
