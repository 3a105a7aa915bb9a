# Stage 1: make every checkpoint the config names available locally, with a manifest.


# `snakemake fetch`: only the Hub downloads (then `offprincipal pin-revisions CONFIG`)
rule fetch:
    input:
        [manifest(c) for c in checkpoints_from("hub")],
    localrule: True


rule fetch_checkpoint:
    output:
        f"{RESULTS}/checkpoints/{{hub_ckpt}}.json",
    log:
        f"{RESULTS}/logs/fetch_checkpoint/{{hub_ckpt}}.log",
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
        checkpoint=directory(f"{RESULTS}/checkpoints/{{syn_ckpt}}"),
        manifest=f"{RESULTS}/checkpoints/{{syn_ckpt}}.json",
    log:
        f"{RESULTS}/logs/synthesize_checkpoint/{{syn_ckpt}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        spec=synthetic_spec,
    script:
        "../scripts/synthesize-checkpoint.py"
