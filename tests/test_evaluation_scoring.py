"""Answer extraction and correctness on real-format answers (primary is_equiv, secondary math-verify, toy)."""

import pytest

from offprincipal.evaluation import scoring


@pytest.mark.parametrize("response, answer", [
    ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    # nested braces: the brace-matching scan, not a \boxed{(.*?)} regex
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    # several boxes: the last one
    ("first \\boxed{3}, finally \\boxed{7}", "7"),
    # the "\boxed 5" spelling
    ("\\boxed 5", "5"),
    # no box, an unbalanced box, and \fbox (Evalchemy's remove_boxed fails on it, giving "")
    ("the answer is 27", ""),
    ("\\boxed{2", ""),
    ("\\fbox{27}", ""),
])
def test_extract_boxed(response, answer):
    assert scoring.extract_boxed(response) == answer


@pytest.mark.parametrize("gold, response, primary, secondary", [
    ("\\frac{1}{2}", "\\boxed{\\dfrac12}", True, True),        # \dfrac and unbraced digits
    ("\\frac{1}{2}", "\\boxed{0.5}", True, True),              # Hendrycks maps 0.5 to \frac{1}{2}
    ("\\frac{\\sqrt3}{2}", "\\boxed{\\frac{\\sqrt{3}}{2}}", True, True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3,\\frac{\\pi}{2})}", True, True),
    ("5", "\\boxed{5\\text{ cm}}", True, True),                # units dropped
    ("30", "\\boxed{30^\\circ}", True, True),                  # degrees dropped
    ("12", "\\boxed{x = 12}", True, True),                     # short "x =" prefix dropped
    ("7", "\\boxed{3} then \\boxed{7}", True, True),           # the last box counts, for both
    ("3", "\\boxed{3} then \\boxed{7}", False, False),
    (27, "\\boxed{27.0}", False, True),                        # float answer: only math-verify accepts it
    ("3", "\\boxed{\\{3\\}}", False, True),
    ("10", "\\boxed{\\text{10}}", False, True),
    ("27", "the answer is 27", False, True),                   # no box: only math-verify reads it
    ("27", "\\boxed{28}", False, False),
    ("-3", "\\boxed{-3}", True, True),
    ("-3", "\\boxed{3}", False, False),
])
def test_primary_and_secondary_scores(gold, response, primary, secondary):
    assert scoring.is_equiv_correct(gold, response) is primary
    assert scoring.math_verify_correct(gold, response) is secondary


@pytest.mark.parametrize("gold", ["27.0", 27.0, "27.00", 27, "27"])
def test_amc_float_gold_scores(gold):
    # some AMC23 copies store golds as float strings; Hendrycks is_equiv("27.0", "27") is false
    from lm_eval.tasks.hendrycks_math.utils import is_equiv

    assert not is_equiv("27.0", "27")  # the trap this normalisation exists for
    assert scoring.normalize_gold(gold) == "27"
    assert scoring.is_equiv_correct(gold, "so \\boxed{27}")
    assert not scoring.is_equiv_correct(gold, "so \\boxed{28}")


def test_normalize_gold_keeps_non_integral_answers():
    assert scoring.normalize_gold("2.5") == "2.5"
    assert scoring.normalize_gold(2.5) == "2.5"
    assert scoring.normalize_gold("-4.0") == "-4"
    assert scoring.normalize_gold("\\frac{1}{2}") == "\\frac{1}{2}"
    with pytest.raises(TypeError, match="bool"):
        scoring.normalize_gold(True)


def test_toy_scoring_is_the_toy_verifier():
    problem = {"prompt": "(7+5)*3-4=", "answer": "32"}
    assert scoring.toy_correct(problem, "12*3-4=36-4=32</s>")
    assert scoring.toy_correct(problem, "32")
    assert not scoring.toy_correct(problem, "12*3-4=36-4=31")
    assert not scoring.toy_correct(problem, "32x")
    assert scoring.toy_extract("12*3-4=36-4=32\nmore") == "32"
    assert scoring.toy_extract("no answer") == ""
