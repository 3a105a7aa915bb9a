"""The files each artifact reads, as the workflow's rules declare them and the renderers read them.

:func:`artifact_inputs` turns an artifact's config entry and its ``needs``
(:data:`offprincipal.artifacts.catalogue.ARTIFACTS`) into named lists of paths under the
result layout (:class:`offprincipal.layout.Layout`); :func:`claims_inputs` and
:func:`claims_spec` do the same for the claims table, made from the claimed artifacts' inputs;
:func:`evaluation_contrasts` lists the paired accuracy comparisons an artifact shows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from offprincipal.artifacts.catalogue import ARTIFACTS
from offprincipal.layout import Layout


def artifact_inputs(
    name: str, spec: Mapping, *, pairs: Mapping, checkpoints: Mapping, results: str | os.PathLike
) -> dict[str, list[str]]:
    """Files artifact ``name`` reads, as named lists of paths ordered like ``spec["pairs"]``.

    ``spec`` is the artifact's config entry, ``pairs`` and ``checkpoints`` the config sections
    of those names, and ``results`` the folder the workflow writes this config's files to.
    Keys and paths are the ones the workflow's rules produce and the renderers read.
    """
    pids = spec["pairs"]
    base = [pairs[p]["base"] for p in pids]
    finetuned = [pairs[p]["finetuned"] for p in pids]
    needs = ARTIFACTS[name].needs

    at = Layout(os.fspath(results))

    def per_pair(file: str) -> list[str]:
        return [at.pair_file(p, file) for p in pids]

    inputs: dict[str, list[str]] = {}
    if "updates" in needs:
        inputs["updates"] = per_pair("updates.csv")
    if "geometry" in needs:
        inputs["geometry"] = per_pair("geometry.csv")
        inputs["angles"] = per_pair("angles.csv")
    if "masks" in needs:
        inputs["masks"] = per_pair("masks.npz")
    if "spectra" in needs:
        inputs["base_spectra"] = [at.spectra(c) for c in base]
        inputs["ft_spectra"] = [at.spectra(c) for c in finetuned]
    if "jaccard" in needs:
        inputs["jaccard"] = [at.crossrun(name)]
    if "runlog" in needs:
        inputs["runs"] = [at.run_dir(_run_of(name, c, checkpoints)) for c in finetuned]
    if "eval" in needs:
        suite = spec["suite"]
        inputs["base_eval"] = [at.eval_result(suite, c) for c in base]
        inputs["ft_eval"] = [at.eval_result(suite, c) for c in finetuned]
        inputs["paired"] = [at.paired(name)]
        if spec.get("ood_suite"):
            ood = spec["ood_suite"]
            inputs["base_eval_ood"] = [at.eval_result(ood, c) for c in base]
            inputs["ft_eval_ood"] = [at.eval_result(ood, c) for c in finetuned]
            inputs["paired_ood"] = [at.paired(name, ood=True)]
    if "rotation" in needs:
        inputs["rotation"] = per_pair("rotation.csv")
        inputs["rotation_layers"] = per_pair("rotation_layers.csv")
    # every artifact's provenance sidecar records its checkpoints' manifests, so each render job
    # declares them (a training-log figure would otherwise race its run's final checkpoint)
    inputs["base_manifests"] = [at.manifest(c) for c in base]
    inputs["ft_manifests"] = [at.manifest(c) for c in finetuned]
    return inputs


def evaluation_contrasts(spec: Mapping, pairs: Mapping) -> list[tuple[str, str]]:
    """The paired accuracy comparisons (checkpoint a, checkpoint b; a minus b) an artifact shows:
    each pair's fine-tune against its base, each fine-tune against the ``reference`` pair's
    fine-tune, then the spec's explicit ``contrasts``; each once, in that order."""
    out: list[tuple[str, str]] = []

    def add(a: str, b: str) -> None:
        if a != b and (a, b) not in out:
            out.append((a, b))

    for pid in spec["pairs"]:
        add(pairs[pid]["finetuned"], pairs[pid]["base"])
    if spec.get("reference"):
        ref = pairs[spec["reference"]]["finetuned"]
        for pid in spec["pairs"]:
            add(pairs[pid]["finetuned"], ref)
    for a, b in spec.get("contrasts", []):
        add(a, b)
    return out


def _run_of(name: str, ckpt: str, checkpoints: Mapping) -> str:
    """The training run that saved ``ckpt``, which artifact ``name`` reads the log of."""
    spec = checkpoints[ckpt]
    if spec["source"] != "run":
        raise ValueError(
            f"artifact '{name}' reads training logs, but checkpoint '{ckpt}' is of source "
            f"'{spec['source']}', not saved by a run"
        )
    return spec["run"]


def claims_inputs(
    claimed: Sequence[str], specs: Mapping, *, pairs: Mapping, checkpoints: Mapping, results: str | os.PathLike
) -> dict[str, list[str]]:
    """Inputs of the claims table: each claimed artifact's inputs that ``specs`` (the config's
    artifacts) renders, under ``artifact/key`` (manifests included: some claims read them), and
    the manifests of all their pairs once each under the keys every provenance sidecar records."""
    inputs: dict[str, list[str]] = {}
    base_manifests: dict[str, None] = {}
    ft_manifests: dict[str, None] = {}
    for name in claimed:
        if name not in specs:
            continue
        for key, files in artifact_inputs(name, specs[name], pairs=pairs, checkpoints=checkpoints,
                                          results=results).items():
            inputs[f"{name}/{key}"] = files
            if key == "base_manifests":
                base_manifests.update(dict.fromkeys(files))
            elif key == "ft_manifests":
                ft_manifests.update(dict.fromkeys(files))
    if inputs or base_manifests:
        inputs["base_manifests"] = list(base_manifests)
        inputs["ft_manifests"] = list(ft_manifests)
    return inputs


def claims_spec(claimed: Sequence[str], specs: Mapping) -> dict:
    """The claims table's spec: the claimed artifacts' config entries and the union of their pairs."""
    chosen = {name: dict(specs[name]) for name in claimed if name in specs}
    pair_ids = list(dict.fromkeys(p for spec in chosen.values() for p in spec["pairs"]))
    return {"pairs": pair_ids, "artifacts": chosen}
