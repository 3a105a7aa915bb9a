# Config validation, derived names and input functions shared by every stage.

import re

from snakemake.utils import validate

from offprincipal import cluster as cluster_resources
from offprincipal.artifacts.catalogue import ARTIFACTS, CLAIMED, outputs
from offprincipal.artifacts.inputs import (
    artifact_inputs,
    claims_inputs,
    claims_spec,
    evaluation_contrasts,
)
from offprincipal.config import check_references
from offprincipal.layout import Layout
from offprincipal.evaluation.stage import suite_settings
from offprincipal.evaluation.suites import with_defaults

validate(config, "../schemas/config.schema.yaml")
check_references(config)

# every path under this config's results folder (offprincipal.layout)
LAYOUT = Layout.of(config)
RESULTS = LAYOUT.root
CHECKPOINTS = config["checkpoints"]
PAIRS = config["pairs"]
ARTIFACT_SPECS = config["artifacts"]
# the claims table is rendered whenever the config renders an artifact it reads
RENDERED = [
    *ARTIFACT_SPECS,
    *(["claims"] if set(CLAIMED) & set(ARTIFACT_SPECS) else []),
]
METRICS = config["metrics"]
TOY = config.get("toy", {})
RUNS = config.get("runs", {})
EVALUATIONS = config["evaluations"]
SUITES = EVALUATIONS["suites"]
# SLURM shape of the GPU rules (profiles/slurm); None: a local config, no SLURM-only resources
CLUSTER = config.get("cluster")
# vLLM pins its own torch, so GPU evaluations have their own environment
EVALUATION_ENV = (
    "../../envs/eval-gpu.yaml"
    if EVALUATIONS["backend"] == "vllm"
    else "../../envs/offprincipal.yaml"
)


def ids_regex(ids):
    """Alternation of exact ids, or a pattern that matches nothing when there are none."""
    return "|".join(re.escape(i) for i in sorted(ids)) or "(?!)"


def checkpoints_from(source):
    return [c for c, spec in CHECKPOINTS.items() if spec["source"] == source]


wildcard_constraints:
    hub_ckpt=ids_regex(checkpoints_from("hub")),
    local_ckpt=ids_regex(checkpoints_from("local")),
    verl_ckpt=ids_regex(checkpoints_from("verl")),
    syn_ckpt=ids_regex(checkpoints_from("synthetic")),
    toy_ckpt=ids_regex(checkpoints_from("toy_base")),
    int_ckpt=ids_regex(checkpoints_from("intervened")),
    rst_ckpt=ids_regex(checkpoints_from("restored")),
    run_ckpt=ids_regex(checkpoints_from("run")),
    run=ids_regex(RUNS),
    ckpt=ids_regex(CHECKPOINTS),
    pair=ids_regex(PAIRS),
    figure=ids_regex(a for a in ARTIFACT_SPECS if ARTIFACTS[a].kind == "figure"),
    table=ids_regex(a for a in ARTIFACT_SPECS if ARTIFACTS[a].kind == "table"),
    crossrun=ids_regex(a for a in ARTIFACT_SPECS if "jaccard" in ARTIFACTS[a].needs),
    suite=ids_regex(SUITES),
    evaluated=ids_regex(a for a in ARTIFACT_SPECS if "eval" in ARTIFACTS[a].needs),


def synthetic_parent_manifest(wildcards):
    parent = CHECKPOINTS[wildcards.syn_ckpt].get("from")
    return [LAYOUT.manifest(parent)] if parent else []


def intervened_parent_manifest(wildcards):
    return LAYOUT.manifest(CHECKPOINTS[wildcards.int_ckpt]["from"])


def restored_parent_manifests(wildcards):
    spec = CHECKPOINTS[wildcards.rst_ckpt]
    return {
        "base": LAYOUT.manifest(spec["base"]),
        "finetuned": LAYOUT.manifest(spec["finetuned"]),
    }


def restored_recipe(wildcards):
    spec = CHECKPOINTS[wildcards.rst_ckpt]
    return {k: spec[k] for k in ("top_p", "layers") if k in spec}


def intervention_list(wildcards):
    return CHECKPOINTS[wildcards.int_ckpt]["interventions"]


def run_base_manifest(wildcards):
    return LAYOUT.manifest(RUNS[wildcards.run]["base"])


def run_config(wildcards):
    return RUNS[wildcards.run]


def run_dir_of_checkpoint(wildcards):
    return LAYOUT.run_dir(CHECKPOINTS[wildcards.run_ckpt]["run"])


def run_checkpoint_step(wildcards):
    return CHECKPOINTS[wildcards.run_ckpt]["step"]


def run_of(ckpt):
    """The run a checkpoint was saved by, or None for checkpoints not trained here."""
    spec = CHECKPOINTS[ckpt]
    return spec["run"] if spec["source"] == "run" else None


def pair_manifests(wildcards):
    pair = PAIRS[wildcards.pair]
    return {
        "base": LAYOUT.manifest(pair["base"]),
        "ft": LAYOUT.manifest(pair["finetuned"]),
    }


def lineage_first(pairs):
    """The lineage records a metric job of these pairs waits for (metrics.lineage_first).
    Marked ancient: they order the jobs, and a rerun of the check (its base changed) must
    not recompute a fine-tune's spectra."""
    if not METRICS["lineage_first"]:
        return []
    return [ancient(LAYOUT.pair_file(p, "lineage.json")) for p in pairs]


def pairs_finetuning(ckpt):
    """The pairs whose fine-tune is ``ckpt``. A base's spectra wait for no lineage check (a
    fine-tune added later would recompute them); the lineage rule's priority runs the
    check first when both are ready."""
    return [p for p, spec in PAIRS.items() if spec["finetuned"] == ckpt]


def pair_spectra(wildcards):
    pair = PAIRS[wildcards.pair]
    return {
        "base_spectra": LAYOUT.spectra(pair["base"]),
        "ft_spectra": LAYOUT.spectra(pair["finetuned"]),
    }


def crossrun_masks(wildcards):
    return [
        LAYOUT.pair_file(p, "masks.npz")
        for p in ARTIFACT_SPECS[wildcards.crossrun]["pairs"]
    ]


def spec_of(name):
    """An artifact's config entry; the claims table's is made from the artifacts it reads."""
    if name == "claims":
        return claims_spec(CLAIMED, ARTIFACT_SPECS)
    return ARTIFACT_SPECS[name]


def inputs_of(name):
    """Files an artifact reads under this config: offprincipal.artifacts.inputs.artifact_inputs."""
    if name == "claims":
        return claims_inputs(
            CLAIMED,
            ARTIFACT_SPECS,
            pairs=PAIRS,
            checkpoints=CHECKPOINTS,
            results=RESULTS,
        )
    return artifact_inputs(
        name,
        ARTIFACT_SPECS[name],
        pairs=PAIRS,
        checkpoints=CHECKPOINTS,
        results=RESULTS,
    )


def figure_inputs(wildcards):
    return inputs_of(wildcards.figure)


def table_inputs(wildcards):
    return inputs_of(wildcards.table)


def artifact_params(name):
    """Everything a renderer needs besides files; passed via params so a change reruns it."""
    spec = spec_of(name)
    synthetic = any(
        CHECKPOINTS[PAIRS[p][side]]["source"] == "synthetic"
        for p in spec["pairs"]
        for side in ("base", "finetuned")
    )
    return {
        "spec": spec,
        "pairs": {p: PAIRS[p] for p in spec["pairs"]},
        "runs": {
            run_of(PAIRS[p]["finetuned"]): RUNS[run_of(PAIRS[p]["finetuned"])]
            for p in spec["pairs"]
            if run_of(PAIRS[p]["finetuned"])
        },
        "synthetic": synthetic,
        "config_name": config["name"],
        "metrics": METRICS,
    }


def artifact_caption(name):
    art = ARTIFACTS[name]
    extra = spec_of(name).get("caption", "")
    if artifact_params(name)["synthetic"]:
        scope = (
            "Computed from synthetic stand-in checkpoints the pipeline builds itself (a dense "
            "perturbation for SFT, planted sparse off-principal perturbations for RL), not from "
            "trained models."
        )
    elif TOY:
        scope = toy_scope()
    else:
        scope = "Computed from the checkpoints listed in the table of pairs."
    if "eval" in art.needs:
        scope = f"{scope} {suite_caption(ARTIFACT_SPECS[name]['suite'])}"
    folder = "figures" if art.kind == "figure" else "tables"
    where = (
        f"Provenance: {folder}/{name}.provenance.json (report category Provenance), "
        "re-checked by offprincipal verify."
    )
    text = f"{art.title}. {art.caption} {scope} {extra} {where}".replace("  ", " ")
    # the report renders captions as reStructuredText, where |x| is a substitution
    return text.replace("|", "\\|")


def suite_caption(suite):
    """What an accuracy artifact's suite evaluates, and how."""
    s = with_defaults(suite_settings(SUITES[suite]))
    tasks = ", ".join(f"{t} (avg@{e['k']})" for t, e in s["tasks"].items())
    how = (
        f"temperature {s['temperature']}, top-p {s['top_p']}, "
        f"up to {s['max_gen_toks']} new tokens, "
        f"chat template {'on' if s['chat_template'] else 'off'}"
    )
    return (
        f"Accuracy: evaluation suite '{suite}' through lm-eval 0.4.13 "
        f"({EVALUATIONS['backend']} backend): {tasks}; {how}. Intervals are 95% bootstrap "
        "intervals over problems; differences between checkpoints are paired (problems "
        "resampled jointly)."
    )


def artifact_paths(name):
    kind = ARTIFACTS[name].kind
    return [LAYOUT.artifact_file(name, kind, ext) for ext in outputs(name)] + [
        LAYOUT.sidecar(name, kind)
    ]


def all_artifact_outputs():
    return [path for name in RENDERED for path in artifact_paths(name)]


def hub_spec(wildcards):
    return CHECKPOINTS[wildcards.hub_ckpt]


def synthetic_spec(wildcards):
    return CHECKPOINTS[wildcards.syn_ckpt]


def figure_params(wildcards):
    return artifact_params(wildcards.figure)


def table_params(wildcards):
    return artifact_params(wildcards.table)


def claims_params(wildcards):
    return artifact_params("claims")


def claims_inputs_of(wildcards):
    return inputs_of("claims")


def claims_caption(wildcards):
    return artifact_caption("claims")


def figure_caption(wildcards):
    return artifact_caption(wildcards.figure)


def table_caption(wildcards):
    return artifact_caption(wildcards.table)


def crossrun_layer(wildcards):
    return ARTIFACT_SPECS[wildcards.crossrun].get("layer")


def crossrun_runs(wildcards):
    return ARTIFACT_SPECS[wildcards.crossrun]["pairs"]


def toy_scope():
    pre = TOY.get("pretrain", {})
    return (
        "Toy world: a Qwen3-architecture model with "
        f"{pre.get('num_layers', 4)} layers and hidden size {pre.get('hidden_size', 96)}, "
        "pretrained by this pipeline on synthetic integer arithmetic, then fine-tuned on a CPU "
        "for tens of steps; computed for real at toy scale, not at the paper's scale."
    )


def suite_reads_toy_data(suite):
    return any(task.startswith("toy:") for task in SUITES[suite]["tasks"])


def evaluation_inputs(wildcards):
    inputs = {"manifest": LAYOUT.manifest(wildcards.ckpt)}
    if suite_reads_toy_data(wildcards.suite):
        inputs["data"] = LAYOUT.toy_data()
    return inputs


def evaluation_gpus():
    """GPUs one evaluation job holds: vLLM's tensor x data parallel size; none for hf."""
    return cluster_resources.evaluation_gpus(EVALUATIONS)


def evaluation_rule_resources():
    """The evaluate rule's resources: its GPUs, plus the cluster shape when there is one."""
    if CLUSTER is None:
        return {"gpu": evaluation_gpus()}
    return cluster_resources.evaluation_resources(CLUSTER, EVALUATIONS)


def svd_rule_resources():
    """The SVD passes' resources on a cluster (GPU nodes unless cluster.svd_gpus is 0)."""
    return {} if CLUSTER is None else cluster_resources.svd_resources(CLUSTER)


def contrasts_of(wildcards):
    return evaluation_contrasts(ARTIFACT_SPECS[wildcards.evaluated], PAIRS)


def paired_results(wildcards):
    suite = ARTIFACT_SPECS[wildcards.evaluated]["suite"]
    ckpts = dict.fromkeys(c for contrast in contrasts_of(wildcards) for c in contrast)
    return {c: LAYOUT.eval_result(suite, c) for c in ckpts}


def paired_results_ood(wildcards):
    suite = ARTIFACT_SPECS[wildcards.evaluated]["ood_suite"]
    ckpts = dict.fromkeys(c for contrast in contrasts_of(wildcards) for c in contrast)
    return {c: LAYOUT.eval_result(suite, c) for c in ckpts}


def all_evaluation_outputs():
    """The evaluations the config lists besides those its artifacts read."""
    return [
        LAYOUT.eval_result(suite, ckpt)
        for suite, ckpts in EVALUATIONS["checkpoints"].items()
        for ckpt in ckpts
    ]
