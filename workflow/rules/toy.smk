# The toy world: seeded task datasets, a base pretrained on them and intervened bases
# (its training runs are in training.smk, its evaluations in evaluation.smk).


rule toy_datasets:
    output:
        directory(f"{RESULTS}/toy/data"),
    log:
        f"{RESULTS}/logs/toy_datasets.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        seed=TOY.get("seed", 0),
        datasets=TOY.get("datasets", {}),
    script:
        "../scripts/toy-datasets.py"


rule pretrain_toy_base:
    input:
        data=f"{RESULTS}/toy/data",
    output:
        checkpoint=directory(f"{RESULTS}/checkpoints/{{toy_ckpt}}"),
        manifest=f"{RESULTS}/checkpoints/{{toy_ckpt}}.json",
    log:
        f"{RESULTS}/logs/pretrain_toy_base/{{toy_ckpt}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_toy_base/{{toy_ckpt}}.tsv"
    conda:
        "../../envs/offprincipal.yaml"
    threads: 2
    params:
        seed=TOY.get("seed", 0),
        recipe=TOY.get("pretrain", {}),
    script:
        "../scripts/pretrain-toy-base.py"


rule intervene:
    input:
        parent=intervened_parent_manifest,
    output:
        checkpoint=directory(f"{RESULTS}/checkpoints/{{int_ckpt}}"),
        manifest=f"{RESULTS}/checkpoints/{{int_ckpt}}.json",
    log:
        f"{RESULTS}/logs/intervene/{{int_ckpt}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        interventions=intervention_list,
    script:
        "../scripts/intervene.py"
