# The toy world: seeded task datasets, a base pretrained on them, intervened bases,
# and training runs with the single-machine backend.


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


rule train_run:
    input:
        base=run_base_manifest,
        data=f"{RESULTS}/toy/data",
    output:
        directory(f"{RESULTS}/runs/{{run}}"),
    log:
        f"{RESULTS}/logs/train_run/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_run/{{run}}.tsv"
    conda:
        "../../envs/offprincipal.yaml"
    # one thread per run: two single-threaded runs side by side beat one two-threaded run
    threads: 1
    params:
        run=run_config,
    script:
        "../scripts/train-run.py"


rule run_checkpoint:
    input:
        run_dir_of_checkpoint,
    output:
        f"{RESULTS}/checkpoints/{{run_ckpt}}.json",
    log:
        f"{RESULTS}/logs/run_checkpoint/{{run_ckpt}}.log",
    localrule: True
    conda:
        "../../envs/offprincipal.yaml"
    params:
        step=run_checkpoint_step,
    script:
        "../scripts/run-checkpoint.py"
