"""Provenance sidecars: what produced one rendered artifact, and whether it still holds.

:func:`build_record` describes one artifact: the checkpoints behind it (from their manifests:
Hub repo + resolved commit, or training run + step + that run's ``run.json`` essentials; a
safetensors-*header* fingerprint, never the weights), the config values that shaped it (the
render params: the artifact's config entry, its pairs and runs, the metrics settings), the
versions of the key packages, the project's git commit and dirty flag, and the SHA-256 of
each direct input file. Paths are stored relative to the results folder (the sidecar's
grandparent), so a moved results folder still verifies.

:func:`write_sidecar` writes it atomically as ``{figures,tables}/{artifact}.provenance.json``
and only when its content changed: the record holds no timestamps, so a no-op rerun leaves
the file (and its mtime) untouched. :func:`verify` re-checks every sidecar of a results folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from offprincipal.checkpoints.local import header_fingerprint
from offprincipal.io import write_json
from offprincipal.layout import Layout
from offprincipal.training.run_directory import RUN_MANIFEST

#: distributions whose versions every sidecar records ("not installed" where absent)
PACKAGES = ("torch", "transformers", "safetensors", "verl", "vllm", "lm-eval", "snakemake")
SUFFIX = ".provenance.json"
#: input keys under which the render rules declare the checkpoint manifests a sidecar records
MANIFEST_KEYS = ("base_manifests", "ft_manifests")
SCHEMA = 1
_PROJECT = Path(__file__).resolve().parents[2]
#: manifest fields that identify a checkpoint (the rest -- sizes, mtimes, paths -- are local facts)
_CHECKPOINT_FIELDS = ("source", "repo", "revision", "commit", "run", "step", "fingerprint", "seed", "kind", "parent")
#: run.json fields that say how a run was made (its metrics live in metrics.jsonl, hashed as an input)
_RUN_FIELDS = ("backend", "spec", "versions", "reference_base", "steps", "optimizer_updates")


class ProvenanceError(ValueError):
    """An artifact's provenance cannot be recorded; the message names the checkpoint or file."""


def sidecar_path(artifact_output: str | os.PathLike) -> Path:
    """``figures/fig4.pdf`` -> ``figures/fig4.provenance.json``."""
    p = Path(artifact_output)
    return p.with_name(p.name.split(".")[0] + SUFFIX)


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    return {d: package_version(d) for d in PACKAGES}


def git_state(root: str | os.PathLike = _PROJECT) -> dict[str, object]:
    """``{"commit", "dirty"}`` of the project checkout; ``"unknown"`` without git or a repository."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {
        "commit": commit.strip() if commit else "unknown",
        "dirty": "unknown" if status is None else bool(status.strip()),
    }


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def hash_input(path: str | os.PathLike) -> dict[str, object]:
    """SHA-256 of a file; for a directory (a training run), of each file directly inside it --
    run.json, metrics.jsonl, a mask -- not of the checkpoints in its subfolders, which the
    checkpoint records fingerprint instead."""
    p = Path(path)
    if p.is_dir():
        return {"files": {f.name: sha256_file(f) for f in sorted(p.iterdir()) if f.is_file()}}
    if p.is_file():
        return {"sha256": sha256_file(p)}
    raise ProvenanceError(f"input {p} does not exist")


def _rel(path: str | os.PathLike, results: Path) -> str:
    p = Path(path).absolute()
    try:
        return str(p.relative_to(results.absolute()))
    except ValueError:
        return str(p)


def _resolve(stored: str, results: Path) -> Path:
    p = Path(stored)
    return p if p.is_absolute() else results / p


def checkpoint_record(ckpt: str, manifest: str | os.PathLike, results: Path) -> dict[str, object]:
    """Identity of checkpoint ``ckpt`` from its manifest: the manifest's identifying fields, a
    header fingerprint (the manifest's, or read from the safetensors headers now), and for a
    checkpoint saved by a training run that run's ``run.json`` essentials."""
    mpath = Path(manifest)
    if not mpath.is_file():
        raise ProvenanceError(f"checkpoint '{ckpt}': manifest {mpath} does not exist")
    m = json.loads(mpath.read_text())
    rec: dict[str, object] = {k: m[k] for k in _CHECKPOINT_FIELDS if k in m}
    rec["manifest"] = {"path": _rel(mpath, results), "sha256": sha256_file(mpath)}
    if "fingerprint" not in rec:
        d = Path(m.get("path", ""))
        shards = sorted(f.name for f in d.glob("*.safetensors")) if m.get("path") and d.is_dir() else []
        if not shards:
            raise ProvenanceError(f"checkpoint '{ckpt}': manifest {mpath} names no directory of safetensors files "
                                  f"(path: {m.get('path')!r}) to fingerprint")
        rec["fingerprint"] = header_fingerprint(d, shards)
    if m.get("source") == "run":
        run_json = Path(Layout(str(results)).run_dir(str(m["run"]))) / RUN_MANIFEST
        if not run_json.is_file():
            raise ProvenanceError(f"checkpoint '{ckpt}': its run's manifest {run_json} does not exist")
        run = json.loads(run_json.read_text())
        rec["run_provenance"] = {"run_json": {"path": _rel(run_json, results), "sha256": sha256_file(run_json)},
                                 **{k: run[k] for k in _RUN_FIELDS if k in run}}
    return rec


def build_record(
    artifact: str,
    inputs: Mapping[str, list[str]],
    outputs: list[str],
    params: Mapping,
    *,
    results: str | os.PathLike,
) -> dict[str, object]:
    """The sidecar content for ``artifact`` rendered from ``inputs`` to ``outputs`` with the render
    ``params`` (spec, pairs, runs, metrics, ...). The manifests of every base and fine-tuned
    checkpoint of its pairs must be among the declared inputs (``base_manifests`` and
    ``ft_manifests``, as :func:`offprincipal.artifacts.artifact_inputs` gives them): only a declared
    input is sure to exist when the render job runs, e.g. a training-log figure would otherwise
    race the job that writes its run's final checkpoint. Their hashes go into the checkpoint
    records, not again into ``inputs`` (nor do the claims table's per-artifact ``{artifact}/...``
    copies of those keys)."""
    root = Path(results)
    declared = {Path(f).absolute() for key in MANIFEST_KEYS for f in inputs.get(key, [])}
    ckpts = sorted({c for p in params["pairs"].values() for c in (p["base"], p["finetuned"])})
    records = {}
    for c in ckpts:
        manifest = Path(Layout(str(root)).manifest(c)).absolute()
        if manifest not in declared:
            raise ProvenanceError(f"{artifact}: the manifest {manifest} of checkpoint '{c}' is not among the "
                                  f"render job's declared inputs ({', '.join(MANIFEST_KEYS)})")
        records[c] = checkpoint_record(c, manifest, root)
    return {
        "schema": SCHEMA,
        "artifact": artifact,
        "outputs": sorted(_rel(o, root) for o in outputs),
        "checkpoints": records,
        "config": json.loads(json.dumps(dict(params), sort_keys=True, default=str)),
        "versions": package_versions(),
        "git": git_state(),
        "inputs": {key: [{"path": _rel(f, root), **hash_input(f)} for f in files]
                   for key, files in sorted(inputs.items()) if key.rsplit("/", 1)[-1] not in MANIFEST_KEYS},
    }


def write_sidecar(path: str | os.PathLike, record: Mapping) -> bool:
    """Write ``record`` to ``path`` atomically unless the file already holds exactly it; True if written."""
    p = Path(path)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if p.is_file() and p.read_text() == text:
        return False
    write_json(p, record)
    return True


def check_sidecar(path: str | os.PathLike) -> list[str]:
    """Problems of one sidecar against the files on disk now: each changed or missing input,
    checkpoint manifest or run manifest, and each missing output; empty if it still holds."""
    p = Path(path)
    results = p.absolute().parent.parent
    rec = json.loads(p.read_text())
    problems: list[str] = []

    def check(what: str, stored: str, expected: Mapping) -> None:
        f = _resolve(stored, results)
        if not f.exists():
            problems.append(f"{what} {stored} is missing")
            return
        if hash_input(f) != {k: v for k, v in expected.items() if k != "path"}:
            problems.append(f"{what} {stored} changed since rendering")

    for key, files in rec.get("inputs", {}).items():
        for entry in files:
            check(f"input '{key}'", entry["path"], entry)
    for cid, c in rec.get("checkpoints", {}).items():
        check(f"checkpoint '{cid}' manifest", c["manifest"]["path"], c["manifest"])
        run_json = c.get("run_provenance", {}).get("run_json")
        if run_json:
            check(f"checkpoint '{cid}' run manifest", run_json["path"], run_json)
    for out in rec.get("outputs", []):
        if not _resolve(out, results).is_file():
            problems.append(f"output {out} is missing")
    return problems


def verify(results: str | os.PathLike) -> dict[str, list[str]]:
    """``{artifact: problems}`` for every sidecar under ``results/{figures,tables}``."""
    root = Path(results)
    found = sorted(f for folder in ("figures", "tables") for f in (root / folder).glob(f"*{SUFFIX}"))
    return {f.name[: -len(SUFFIX)]: check_sidecar(f) for f in found}
