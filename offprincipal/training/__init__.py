"""Training backends for the toy world: one run specification (:mod:`.spec`), sparse-update
masks from the base weights (:mod:`.masks`) and the single-machine TRL backend
(:mod:`.trl_backend`, imported lazily because it pulls in trl/transformers)."""

from .spec import RunSpec, SpecError, to_verl_overrides

__all__ = ["RunSpec", "SpecError", "to_verl_overrides", "train"]


def train(*args, **kwargs):
    """:func:`offprincipal.training.trl_backend.train` (lazy import)."""
    from .trl_backend import train as _train

    return _train(*args, **kwargs)
