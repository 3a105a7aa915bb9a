# Config validation, derived names and input functions shared by every stage.

import re

from snakemake.utils import validate

from offprincipal.artifacts import ARTIFACTS, outputs
from offprincipal.config import check_references

validate(config, "../schemas/config.schema.yaml")
check_references(config)

RESULTS = f"{config['paths']['results']}/{config['name']}"
CHECKPOINTS = config["checkpoints"]
PAIRS = config["pairs"]
ARTIFACT_SPECS = config["artifacts"]
METRICS = config["metrics"]


def ids_regex(ids):
    """Alternation of exact ids, or a pattern that matches nothing when there are none."""
    return "|".join(re.escape(i) for i in sorted(ids)) or "(?!)"


def checkpoints_from(source):
    return [c for c, spec in CHECKPOINTS.items() if spec["source"] == source]


wildcard_constraints:
    hub_ckpt=ids_regex(checkpoints_from("hub")),
    syn_ckpt=ids_regex(checkpoints_from("synthetic")),
    ckpt=ids_regex(CHECKPOINTS),
    pair=ids_regex(PAIRS),
    figure=ids_regex(a for a in ARTIFACT_SPECS if ARTIFACTS[a].kind == "figure"),
    table=ids_regex(a for a in ARTIFACT_SPECS if ARTIFACTS[a].kind == "table"),
    crossrun=ids_regex(a for a in ARTIFACT_SPECS if "jaccard" in ARTIFACTS[a].needs),


def manifest(ckpt):
    return f"{RESULTS}/checkpoints/{ckpt}.json"


def spectra(ckpt):
    return f"{RESULTS}/spectra/{ckpt}.safetensors"


def pair_file(pair, name):
    return f"{RESULTS}/pairs/{pair}/{name}"


def synthetic_parent_manifest(wildcards):
    parent = CHECKPOINTS[wildcards.syn_ckpt].get("from")
    return [manifest(parent)] if parent else []


def pair_manifests(wildcards):
    pair = PAIRS[wildcards.pair]
    return {"base": manifest(pair["base"]), "ft": manifest(pair["finetuned"])}


def pair_spectra(wildcards):
    pair = PAIRS[wildcards.pair]
    return {
        "base_spectra": spectra(pair["base"]),
        "ft_spectra": spectra(pair["finetuned"]),
    }


def crossrun_masks(wildcards):
    return [
        pair_file(p, "masks.npz") for p in ARTIFACT_SPECS[wildcards.crossrun]["pairs"]
    ]


def artifact_inputs(name):
    """Files an artifact reads, as named lists ordered like its config `pairs`."""
    pairs = ARTIFACT_SPECS[name]["pairs"]
    needs = ARTIFACTS[name].needs
    inputs = {}
    if "updates" in needs:
        inputs["updates"] = [pair_file(p, "updates.csv") for p in pairs]
    if "geometry" in needs:
        inputs["geometry"] = [pair_file(p, "geometry.csv") for p in pairs]
        inputs["angles"] = [pair_file(p, "angles.csv") for p in pairs]
    if "masks" in needs:
        inputs["masks"] = [pair_file(p, "masks.npz") for p in pairs]
    if "spectra" in needs:
        inputs["base_spectra"] = [spectra(PAIRS[p]["base"]) for p in pairs]
        inputs["ft_spectra"] = [spectra(PAIRS[p]["finetuned"]) for p in pairs]
    if "jaccard" in needs:
        inputs["jaccard"] = [f"{RESULTS}/crossrun/{name}.csv"]
    return inputs


def figure_inputs(wildcards):
    return artifact_inputs(wildcards.figure)


def table_inputs(wildcards):
    return artifact_inputs(wildcards.table)


def artifact_params(name):
    """Everything a renderer needs besides files; passed via params so a change reruns it."""
    spec = ARTIFACT_SPECS[name]
    synthetic = any(
        CHECKPOINTS[PAIRS[p][side]]["source"] == "synthetic"
        for p in spec["pairs"]
        for side in ("base", "finetuned")
    )
    return {
        "spec": spec,
        "pairs": {p: PAIRS[p] for p in spec["pairs"]},
        "synthetic": synthetic,
        "config_name": config["name"],
        "metrics": METRICS,
    }


def artifact_caption(name):
    art = ARTIFACTS[name]
    extra = ARTIFACT_SPECS[name].get("caption", "")
    scope = (
        "Computed from synthetic stand-in checkpoints the pipeline builds itself (a dense "
        "perturbation for SFT, planted sparse off-principal perturbations for RL), not from "
        "trained models."
        if artifact_params(name)["synthetic"]
        else "Computed from the checkpoints listed in the table of pairs."
    )
    return f"{art.title}. {art.caption} {scope} {extra}".strip()


def artifact_paths(name):
    folder = "figures" if ARTIFACTS[name].kind == "figure" else "tables"
    return [f"{RESULTS}/{folder}/{name}.{ext}" for ext in outputs(name)]


def all_artifact_outputs():
    return [path for name in ARTIFACT_SPECS for path in artifact_paths(name)]


def hub_spec(wildcards):
    return CHECKPOINTS[wildcards.hub_ckpt]


def synthetic_spec(wildcards):
    return CHECKPOINTS[wildcards.syn_ckpt]


def figure_params(wildcards):
    return artifact_params(wildcards.figure)


def table_params(wildcards):
    return artifact_params(wildcards.table)


def figure_caption(wildcards):
    return artifact_caption(wildcards.figure)


def table_caption(wildcards):
    return artifact_caption(wildcards.table)


def crossrun_layer(wildcards):
    return ARTIFACT_SPECS[wildcards.crossrun].get("layer")


def crossrun_runs(wildcards):
    return ARTIFACT_SPECS[wildcards.crossrun]["pairs"]
