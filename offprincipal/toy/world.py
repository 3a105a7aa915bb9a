"""The toy world's jobs, one function per workflow rule.

Each function builds one thing (a pretrained base, an intervened base, a training run, a
checkpoint manifest) and writes it atomically with a manifest in the same
shape as a Hub download's, so the metric stages treat toy checkpoints like any other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from offprincipal.io import write_json


def _manifest_path(manifest: str | os.PathLike) -> str:
    return json.loads(Path(manifest).read_text())["path"]


def build_toy_base(name: str, datasets_dir, out_dir, manifest, *, seed: int, recipe: dict, threads: int = 2) -> dict:
    """Pretrain the toy base on the task family's pretraining mixture (its geometry comes
    from training), save it like a real checkpoint and write its manifest."""
    from offprincipal.toy.pretrain import pretrain_base

    metrics = pretrain_base(out_dir, datasets_dir, seed=seed, threads=threads, **recipe)
    record = {"name": name, "source": "toy_base", "path": str(Path(out_dir).resolve()), "pretrain": metrics}
    write_json(manifest, record)
    return record


def build_intervened(name: str, parent_manifest, out_dir, manifest, *, interventions: list[dict]) -> dict:
    """Apply function-preserving ROTATE / PERMUTE interventions to a base (App. D)."""
    from offprincipal.interventions import apply_interventions

    parent = json.loads(Path(parent_manifest).read_text())
    record = apply_interventions(parent["path"], out_dir, interventions)
    out = {
        "name": name,
        "source": "intervened",
        "from": parent["name"],
        "path": str(Path(out_dir).resolve()),
        "intervention_record": str(Path(out_dir).resolve() / "intervention.json"),
        "layers": sorted({int(i["layer"]) for i in interventions}),
    }
    write_json(manifest, out)
    return {**out, "record": record}


def training_rows(datasets_dir, task: str, algorithm: str) -> list[dict]:
    """A run's training data: prompts (and answers, for the verifier) for RL; prompt and
    worked solution followed by the end-of-sequence marker for SFT."""
    from offprincipal.toy.task import EOS_TEXT, load_split

    problems = load_split(datasets_dir, task, "train")
    if algorithm == "sft":
        return [{"prompt": p["prompt"], "completion": p["solution"] + EOS_TEXT} for p in problems]
    return [{"prompt": p["prompt"], "answer": p["answer"]} for p in problems]


def verifier(prompts, completions, answer=None, **_columns) -> list[float]:
    """The backend's reward interface ``(prompts, completions, **columns)`` over the toy
    task's ±1 verifier, which scores each completion against the row's ``answer``."""
    from offprincipal.toy.task import reward_func

    return reward_func(completions, answer=answer, prompts=prompts)


def train_toy_run(run_id: str, run: dict, base_manifest, datasets_dir, out_dir, *, task: str, threads: int = 1) -> dict:
    """Train one run of the config's ``runs`` section (backend ``trl``) on toy task ``task``."""
    from offprincipal.training import RunSpec, train

    spec = RunSpec.from_dict(run["spec"])
    rows = training_rows(datasets_dir, task, spec.algorithm)
    reward = None if spec.algorithm == "sft" else verifier
    return train(spec, _manifest_path(base_manifest), out_dir, backend="trl", train_data=rows, reward_fn=reward,
                 threads=threads, base_checkpoint=run["base"])


def run_checkpoint(name: str, run_dir, step, manifest, *, checkpoint_dir=None) -> dict:
    """Manifest of one saved checkpoint of a run (``step_N`` or ``final``).

    ``checkpoint_dir``: where the checkpoint's HF directory is when it is not inside the run
    directory (verl runs: the merged step, see :mod:`offprincipal.training.verl_backend`)."""
    from offprincipal.training.run_directory import checkpoint_dir_name, read_manifest

    sub = checkpoint_dir_name(step if step == "final" else int(step))
    path = Path(checkpoint_dir) if checkpoint_dir is not None else Path(run_dir) / sub
    if not (path / "config.json").is_file():
        saved = sorted(p.name for p in path.parent.iterdir() if p.is_dir()) if path.parent.is_dir() else []
        raise FileNotFoundError(f"checkpoint '{name}': run {run_dir} saved no '{sub}' at {path} (found {saved})")
    run = read_manifest(run_dir)
    record = {"name": name, "source": "run", "run": Path(run_dir).name, "step": step, "path": str(path.resolve()),
              "backend": run["backend"], "reference_base": run["reference_base"]}
    write_json(manifest, record)
    return record

