"""The pipeline config ``offprincipal compare`` writes into its output folder.

One checkpoint entry per argument (``local``, ``verl`` or ``hub`` source), one pair per
fine-tune with the first argument as base, no paper artifacts; metric settings are the
schema's defaults, with the SVD rank capped at the smallest matrix side so tiny models work.
The result is validated by the project's schema (``offprincipal.config.validate``) before it
is written, atomically.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from offprincipal.compare.sources import Source
from offprincipal.config import validate
from offprincipal.io import atomic_path
from offprincipal.metrics.spectral import default_angle_ks

CONFIG_NAME = "config.yaml"
RESULTS_NAME = "pipeline"  # the pipeline's files land in OUT/pipeline/
MARKER = "# written by `offprincipal compare`"


def pair_id(base_id: str, ft_id: str) -> str:
    return f"{base_id}__{ft_id}"


def metric_settings(smallest_side: int | None, overrides: dict) -> dict:
    """Schema defaults, the SVD rank capped at ``smallest_side``, then the user's overrides."""
    top_k = overrides.get("svd_top_k") or min(128, smallest_side or 128)
    metrics = {
        "svd_top_k": top_k,
        "report_k": min(64, top_k),
        "principal_rank_k": min(128, top_k),
        "angle_ks": default_angle_ks(top_k),
        "lineage_first": True,  # no metric of a pair before (or without) its lineage check
    }
    metrics.update({k: v for k, v in overrides.items() if v is not None})
    metrics["angle_ks"] = [k for k in metrics["angle_ks"] if k <= metrics["svd_top_k"]]
    return metrics


def build_config(ids: list[str], sources: list[Source], out: Path, *, metrics: dict, device: str, hub_cache: str) -> dict:
    base_id = ids[0]
    checkpoints = {cid: dict(s.spec) for cid, s in zip(ids, sources)}
    pairs = {
        pair_id(base_id, cid): {
            "base": base_id,
            "finetuned": cid,
            "label": f"{sources[0].display} → {s.display}",
            "kind": "other",
        }
        for cid, s in zip(ids[1:], sources[1:])
    }
    return {
        "name": RESULTS_NAME,
        "paths": {"results": str(out), "hub_cache": str(hub_cache)},
        "device": device,
        "checkpoints": checkpoints,
        "pairs": pairs,
        "metrics": metrics,
        "artifacts": {},
    }


def write_config(config: dict, out: Path) -> Path:
    """Validate (on a copy: the file keeps only what was chosen) and write ``OUT/config.yaml``."""
    validate(copy.deepcopy(config))
    path = out / CONFIG_NAME
    text = (
        f"{MARKER}; rerun the same command to update the results (only what changed is recomputed)\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
