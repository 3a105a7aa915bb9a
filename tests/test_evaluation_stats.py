"""avg@k, pass@k, standard error and bootstrap intervals against hand-computed cases."""

import math

import numpy as np
import pytest

from offprincipal.evaluation import stats


def test_avg_at_k_hand_computed():
    correct = [[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
    # per problem 3/4, 0, 1 -> mean 7/12
    assert stats.per_problem_accuracy(correct).tolist() == [0.75, 0.0, 1.0]
    assert stats.avg_at_k(correct) == pytest.approx(7 / 12, abs=1e-15)
    # problems with different k weigh equally (mean of means, not of all samples): (1/2 + 1) / 2
    assert stats.avg_at_k([[1, 0], [1, 1, 1]]) == pytest.approx(0.75, abs=1e-15)
    with pytest.raises(ValueError, match="no samples"):
        stats.per_problem_accuracy([[1], []])


def test_pass_at_k_matches_the_binomial_formula():
    assert stats.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10, abs=1e-15)  # 1 - C(3,2)/C(5,2)
    for n in (1, 2, 7, 16, 64):
        for c in range(n + 1):
            for k in sorted({1, min(2, n), n // 2 or 1, n}):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert stats.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)
    # pass@1 is the fraction correct; vectorised over problems
    got = stats.pass_at_k(np.array([4, 4, 4]), np.array([0, 1, 4]), 1)
    np.testing.assert_allclose(got, [0.0, 0.25, 1.0], atol=1e-15)
    with pytest.raises(ValueError, match="at least k"):
        stats.pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="0..n"):
        stats.pass_at_k(3, 4, 1)


def test_standard_error_hand_computed():
    # mean 1/2, sample variance (4 * 1/4) / 3 = 1/3, se = sqrt(1/3) / sqrt(4)
    assert stats.standard_error([0, 1, 1, 0]) == pytest.approx(math.sqrt(1 / 3) / 2, abs=1e-15)
    assert math.isnan(stats.standard_error([0.5]))


def test_bootstrap_degenerate_and_two_point_cases():
    assert stats.bootstrap_ci([0.3] * 10, n_boot=500, seed=1) == (pytest.approx(0.3), pytest.approx(0.3))
    # two problems scoring 0 and 1: a resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% percentiles are exactly 0 and 1
    assert stats.bootstrap_ci([0.0, 1.0], n_boot=4000, seed=0) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_close_to_the_normal_interval():
    rng = np.random.default_rng(7)
    x = (rng.random(400) < 0.3).astype(float)
    a = stats.bootstrap_ci(x, n_boot=4000, seed=3)
    assert a == stats.bootstrap_ci(x, n_boot=4000, seed=3)
    assert a != stats.bootstrap_ci(x, n_boot=4000, seed=4)
    half = 1.96 * stats.standard_error(x)
    assert a[0] == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert a[1] == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_paired_interval_is_narrower_than_unpaired_on_correlated_data():
    rng = np.random.default_rng(0)
    difficulty = rng.random(300)  # shared by both checkpoints: the between-problem variance
    b = difficulty
    a = np.clip(difficulty + 0.02 + 0.02 * rng.standard_normal(300), 0, 1)
    paired = stats.paired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    unpaired = stats.unpaired_bootstrap_diff(a, b, n_boot=2000, seed=0)
    assert paired["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert unpaired["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert paired["n_problems"] == 300
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert width(paired) < width(unpaired) / 5
    assert paired["ci95"][0] > 0  # the shift is resolved only by pairing
    assert unpaired["ci95"][0] < 0


def test_paired_constant_shift_has_a_degenerate_interval():
    b = np.array([0.0, 0.25, 0.5, 1.0])
    out = stats.paired_bootstrap_diff(b + 0.125, b, n_boot=300, seed=0)
    assert out["diff"] == pytest.approx(0.125)
    assert out["ci95"] == [pytest.approx(0.125), pytest.approx(0.125)]
    with pytest.raises(ValueError, match="one length"):
        stats.paired_bootstrap_diff([0, 1], [0, 1, 1])
