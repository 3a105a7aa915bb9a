"""PiSSA initialised offline with peft, for verl (which has no PiSSA switch; verl.md §4.4).

:func:`init_pissa` writes, in one directory:

* the **residual** model ``W_res = W0 - s·B0·A0`` (peft's ``unload()`` after a PiSSA init),
  saved in fp32 so that ``W_res + s·B0·A0`` is ``W0`` to fp32 rounding (a bf16 residual would
  not be), with the base's tokenizer -- verl's ``actor_rollout_ref.model.path``;
* ``pissa_init/``, the principal adapter ``(A0, B0)`` with ``init_lora_weights`` reset to
  True so loading it does not re-run the SVD -- verl's ``actor_rollout_ref.model.lora_adapter_path``;
* ``pissa.json``: the base it came from, r, alpha, target modules.

The residual is what verl trains the adapter on and what it uses as its KL reference (the
actor with the adapter off); the base the analyses compare against stays the original.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from offprincipal.io import atomic_dir

ADAPTER_DIR = "pissa_init"
RECORD = "pissa.json"


def init_pissa(
    base_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    rank: int,
    alpha: float,
    target_modules: list[str],
    init: str = "pissa",
) -> dict:
    """Write the residual model and the ``pissa_init`` adapter of ``base_dir`` (atomically).

    ``init``: peft's ``init_lora_weights`` -- ``"pissa"`` (exact SVD, the default) or
    ``"pissa_niter_K"`` (randomised, K subspace iterations)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not str(init).startswith("pissa"):
        raise ValueError(f"init must be 'pissa' or 'pissa_niter_K', got {init!r}")
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)  # the SVD in fp32
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM", init_lora_weights=init)
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].init_lora_weights = True  # the saved adapter is already the init
    record = {"base": str(Path(base_dir).resolve()), "rank": rank, "alpha": alpha,
              "target_modules": list(target_modules), "init": init, "residual_dtype": "float32"}
    with atomic_dir(out_dir) as tmp:
        peft_model.save_pretrained(tmp / ADAPTER_DIR)
        residual = peft_model.unload()
        residual.config.dtype = torch.float32
        residual.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(tmp)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        for f in tmp.rglob("*"):
            if f.is_file():
                f.chmod(0o644)
            else:
                f.chmod(0o755)
    return record
