# Stage 1: make every checkpoint the config names available locally, with a manifest.


# `snakemake fetch`: only the Hub downloads (then `offprincipal pin-revisions CONFIG`)
rule fetch:
    input:
        [LAYOUT.manifest(c) for c in checkpoints_from("hub")],
    localrule: True


rule fetch_checkpoint:
    output:
        LAYOUT.manifest("{hub_ckpt}"),
    log:
        LAYOUT.log("fetch_checkpoint", "{hub_ckpt}"),
    retries: 2
    conda:
        "../../envs/offprincipal.yaml"
    params:
        spec=hub_spec,
        cache_dir=config["paths"]["hub_cache"],
    script:
        "../scripts/fetch-checkpoint.py"


rule synthesize_checkpoint:
    input:
        synthetic_parent_manifest,
    output:
        checkpoint=directory(LAYOUT.checkpoint("{syn_ckpt}")),
        manifest=LAYOUT.manifest("{syn_ckpt}"),
    log:
        LAYOUT.log("synthesize_checkpoint", "{syn_ckpt}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        spec=synthetic_spec,
    script:
        "../scripts/synthesize-checkpoint.py"


# Checkpoints on disk: their files are the rules' inputs, so a changed file reruns the
# registration (or merge) and everything computed from it.
from offprincipal.checkpoints import local as local_source
from offprincipal.checkpoints import verl as verl_source


rule register_local_checkpoint:
    input:
        lambda wildcards: local_source.watched_files(
            CHECKPOINTS[wildcards.local_ckpt]["path"]
        ),
    output:
        LAYOUT.manifest("{local_ckpt}"),
    log:
        LAYOUT.log("register_local_checkpoint", "{local_ckpt}"),
    localrule: True
    conda:
        "../../envs/offprincipal.yaml"
    params:
        path=lambda wildcards: CHECKPOINTS[wildcards.local_ckpt]["path"],
    script:
        "../scripts/register-local-checkpoint.py"


rule merge_verl_checkpoint:
    input:
        lambda wildcards: verl_source.watched_files(
            CHECKPOINTS[wildcards.verl_ckpt]["path"]
        ),
    output:
        checkpoint=directory(LAYOUT.checkpoint("{verl_ckpt}")),
        manifest=LAYOUT.manifest("{verl_ckpt}"),
    log:
        LAYOUT.log("merge_verl_checkpoint", "{verl_ckpt}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        path=lambda wildcards: CHECKPOINTS[wildcards.verl_ckpt]["path"],
    script:
        "../scripts/merge-verl-checkpoint.py"
