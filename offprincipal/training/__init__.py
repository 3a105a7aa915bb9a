"""Training: one run specification (:mod:`.spec`), two backends behind one :func:`train`.

* ``trl`` (:mod:`.trl_backend`): single machine, CPU, the toy world;
* ``verl`` (:mod:`.verl_backend`): verl 0.9.1 on GPU clusters, in its own environment
  (``envs/training.yaml``), with the mask plugin (:mod:`.verl_mask_plugin`), the reward
  function (:mod:`.reward`), the Hub datasets (:mod:`.data`), PiSSA init (:mod:`.pissa`), the
  adapter fold (:mod:`.fold`) and the checkpoint merge (:mod:`.merge`).

Both write the run directory of :mod:`.run_directory`. Backends are imported lazily: they
pull in trl/transformers or verl.
"""

from .spec import RunSpec, SpecError, VerlLaunch, to_verl_overrides

__all__ = ["RunSpec", "SpecError", "VerlLaunch", "to_verl_overrides", "train", "BACKENDS"]

BACKENDS = ("trl", "verl")


def train(spec, base_dir, out_dir, *, backend: str = "trl", **kwargs):
    """Train ``spec`` from ``base_dir`` into the run directory ``out_dir`` with ``backend``.

    ``trl``: :func:`offprincipal.training.trl_backend.train` (``train_data``, ``reward_fn``,
    ``threads``, ``mask_file``, ``base_checkpoint``). ``verl``:
    :func:`offprincipal.training.verl_backend.train` (``state_dir``, ``train_files``,
    ``experiment_name``, ``resources``, ``base_checkpoint``, ``mask_file``, ``pissa_dir``).
    Returns the run manifest."""
    if backend == "trl":
        from .trl_backend import train as _train
    elif backend == "verl":
        from .verl_backend import train as _train
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return _train(spec, base_dir, out_dir, **kwargs)
