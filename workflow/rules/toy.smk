# The toy world: seeded task datasets, a base pretrained on them and intervened bases
# (its training runs are in training.smk, its evaluations in evaluation.smk).


rule toy_datasets:
    output:
        directory(LAYOUT.toy_data()),
    log:
        LAYOUT.log("toy_datasets"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        seed=TOY.get("seed", 0),
        datasets=TOY.get("datasets", {}),
    script:
        "../scripts/toy-datasets.py"


rule pretrain_toy_base:
    input:
        data=LAYOUT.toy_data(),
    output:
        checkpoint=directory(LAYOUT.checkpoint("{toy_ckpt}")),
        manifest=LAYOUT.manifest("{toy_ckpt}"),
    log:
        LAYOUT.log("pretrain_toy_base", "{toy_ckpt}"),
    benchmark:
        LAYOUT.benchmark("pretrain_toy_base", "{toy_ckpt}")
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
        checkpoint=directory(LAYOUT.checkpoint("{int_ckpt}")),
        manifest=LAYOUT.manifest("{int_ckpt}"),
    log:
        LAYOUT.log("intervene", "{int_ckpt}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        interventions=intervention_list,
    script:
        "../scripts/intervene.py"
