"""The file verl loads as its custom reward function (``reward.custom_reward_function.path``).

verl imports it by path under a module name nothing else can import, so the implementation
lives in the importable :mod:`offprincipal.training.reward`: its Math-Verify checks run in
spawned worker processes, which must be able to import the function they run.
"""

from offprincipal.training.reward import compute_score

__all__ = ["compute_score"]
