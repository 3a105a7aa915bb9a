"""Write a compare report: ``report.json`` (every number), the report's CSVs and the HTML.

Called by the workflow's ``compare_report`` rule for one base checkpoint and every pair of the
config that has it as base. All outputs are written atomically; the HTML is written last.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

import offprincipal
from offprincipal.compare import html as html_report
from offprincipal.compare.numbers import PairInputs, crossrun_numbers, crossrun_sentence, pair_numbers, pair_sentences
from offprincipal.io import atomic_path, write_json, write_table

SETTING_KEYS = ("eta", "abs_tolerance", "cast_to_bf16", "matrix_kinds", "svd_top_k", "svd_dtype", "report_k",
                "principal_rank_k", "mask_alpha", "update_rank", "angle_ks")


def describe(ckpt_id: str, spec: dict, manifest: dict | None = None) -> dict:
    """How the report names a checkpoint: its id, a display string and where it came from."""
    src = spec["source"]
    if src == "hub":
        display = f"{spec['repo']}@{spec['revision']}"
    elif src in ("local", "verl"):
        display = spec["path"]
    else:
        display = f"{src} checkpoint"
    out = {"id": ckpt_id, "source": src, "display": display}
    if manifest:
        for key in ("commit", "fingerprint", "path", "verl_step", "verl_world_size", "repo", "revision"):
            if key in manifest:
                out[key] = manifest[key]
    return out


def write_report(
    pairs: list[PairInputs],
    *,
    base: dict,
    finetuned: list[dict],
    metrics: dict,
    html_path: str | Path,
    json_path: str | Path,
    sparsity_csv: str | Path,
    geometry_csv: str | Path,
    jaccard_csv: str | Path,
    consensus_csv: str | Path,
) -> dict:
    if not pairs:
        raise ValueError(f"no pairs have {base['id']!r} as base")
    settings = {k: metrics[k] for k in SETTING_KEYS if k in metrics}
    per_pair, sentences = {}, []
    sparsity_tables, geometry_tables = [], []
    for pi in pairs:
        numbers, tables = pair_numbers(pi)
        per_pair[pi.pair] = numbers
        sentences += pair_sentences(numbers, pd.read_csv(pi.updates), int(metrics.get("report_k", 64)))
        sparsity_tables.append(tables["sparsity_layers"])
        geometry_tables.append(tables["geometry_layers"])
    cross, cross_tables = crossrun_numbers(pairs, None)
    if cross:
        sentences.append(crossrun_sentence(cross))
    files = [str(p) for p in (sparsity_csv, geometry_csv, jaccard_csv, consensus_csv)]
    for pi in pairs:
        files += [str(pi.updates), str(pi.geometry), str(pi.angles)]
    report = {
        "version": offprincipal.__version__,
        "base": base,
        "finetuned": finetuned,
        "settings": settings,
        "pairs": per_pair,
        "crossrun": cross,
        "summary": " ".join(sentences),
        "files": files,
    }
    first = lambda df: df[["pair"] + [c for c in df.columns if c != "pair"]]  # noqa: E731
    write_table(first(pd.concat(sparsity_tables, ignore_index=True)), sparsity_csv)
    write_table(first(pd.concat(geometry_tables, ignore_index=True)), geometry_csv)
    write_table(cross_tables.get("jaccard", pd.DataFrame(columns=["run_a", "run_b", "jaccard_pooled", "baseline_pooled",
                                                                   "jaccard_mean", "baseline_mean", "n_tensors"])), jaccard_csv)
    write_table(cross_tables.get("consensus", pd.DataFrame(columns=["runs_updated", "observed", "independent"])), consensus_csv)
    write_json(json_path, report)
    document = html_report.render(report)
    with atomic_path(html_path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return report


def read_manifest(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def report_from_workflow(base_id: str, *, pairs: dict, checkpoints: dict, metrics: dict, inputs, outputs) -> dict:
    """The ``compare_report`` rule's job: inputs in :func:`~offprincipal.compare.inputs.report_inputs`'s
    order (one entry per pair, config order)."""
    ids = list(pairs)
    manifests = [read_manifest(p) for p in inputs.manifests]
    pis = [
        PairInputs(
            pair=pid, base=pairs[pid]["base"], finetuned=pairs[pid]["finetuned"], label=pairs[pid]["label"],
            updates=Path(inputs.updates[i]), geometry=Path(inputs.geometry[i]), angles=Path(inputs.angles[i]),
            masks=Path(inputs.masks[i]), lineage=Path(inputs.lineage[i]),
            base_spectra=Path(inputs.base_spectra[0]), ft_spectra=Path(inputs.ft_spectra[i]),
        )
        for i, pid in enumerate(ids)
    ]
    return write_report(
        pis,
        base=describe(base_id, checkpoints[base_id], manifests[0]),
        finetuned=[describe(pairs[pid]["finetuned"], checkpoints[pairs[pid]["finetuned"]], m)
                   for pid, m in zip(ids, manifests[1:])],
        metrics=metrics,
        html_path=outputs.html, json_path=outputs.json, sparsity_csv=outputs.sparsity,
        geometry_csv=outputs.geometry, jaccard_csv=outputs.jaccard, consensus_csv=outputs.consensus,
    )
