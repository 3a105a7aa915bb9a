# Training: the datasets runs train on, the runs themselves (TRL on one machine, verl on GPU
# clusters), each saved step as an HF checkpoint, and the checks of masked runs.
#
#   trl  run:  runs/{run}/ holds the run directory and its HF checkpoints (step_N, final)
#   verl run:  train_state/{run}/ holds verl's FSDP shards and per-attempt logs (kept across
#              failures, so a rerun resumes); runs/{run}/ the run directory; merged/{run}/{step}
#              each saved step in HF bf16; checks/frozen/{run}/{step}.json the masked runs' check


rule hub_dataset:
    output:
        dataset=directory(LAYOUT.dataset("{hub_ds}")),
        manifest=LAYOUT.dataset_manifest("{hub_ds}"),
    log:
        LAYOUT.log("hub_dataset", "{hub_ds}"),
    wildcard_constraints:
        hub_ds=ids_regex(datasets_from("hub")),
    retries: 2
    conda:
        TRAINING_ENV
    params:
        spec=lambda wc: DATASETS[wc.hub_ds],
        cache_dir=config["paths"]["hub_cache"],
    script:
        "../scripts/fetch-dataset.py"


rule toy_dataset_parquet:
    input:
        data=LAYOUT.toy_data(),
    output:
        dataset=directory(LAYOUT.dataset("{toy_ds}")),
        manifest=LAYOUT.dataset_manifest("{toy_ds}"),
    log:
        LAYOUT.log("toy_dataset_parquet", "{toy_ds}"),
    wildcard_constraints:
        toy_ds=ids_regex(datasets_from("toy")),
    conda:
        TRAINING_ENV
    params:
        task=lambda wc: DATASETS[wc.toy_ds]["task"],
    script:
        "../scripts/toy-dataset-parquet.py"


rule train_run:
    input:
        base=run_base_manifest,
        data=LAYOUT.toy_data(),
    output:
        directory(LAYOUT.run_dir("{run}")),
    log:
        LAYOUT.log("train_run", "{run}"),
    benchmark:
        LAYOUT.benchmark("train_run", "{run}")
    wildcard_constraints:
        run=ids_regex(runs_of("trl")),
    conda:
        ANALYSIS_ENV
    # one thread per run: two single-threaded runs side by side beat one two-threaded run
    threads: 1
    params:
        run=run_config,
        task=toy_task_of_run,
    script:
        "../scripts/train-run.py"


rule training_masks:
    input:
        base=run_base_manifest,
    output:
        LAYOUT.training_mask("{run}"),
    log:
        LAYOUT.log("training_masks", "{run}"),
    wildcard_constraints:
        run=ids_regex([r for r in runs_of("verl") if is_masked(r)]),
    conda:
        ANALYSIS_ENV
    threads: 2
    params:
        spec=lambda wc: run_spec(wc.run),
    script:
        "../scripts/training-masks.py"


rule pissa_init:
    input:
        base=run_base_manifest,
    output:
        directory(LAYOUT.pissa_init("{run}")),
    log:
        LAYOUT.log("pissa_init", "{run}"),
    wildcard_constraints:
        run=ids_regex([r for r in runs_of("verl") if is_pissa(r)]),
    conda:
        TRAINING_ENV
    threads: 2
    params:
        spec=lambda wc: run_spec(wc.run),
    script:
        "../scripts/pissa-init.py"


rule train_verl_run:
    input:
        unpack(verl_run_inputs),
    output:
        directory(LAYOUT.run_dir("{run}")),
    log:
        LAYOUT.log("train_verl_run", "{run}"),
    benchmark:
        LAYOUT.benchmark("train_verl_run", "{run}")
    wildcard_constraints:
        run=ids_regex(runs_of("verl")),
    retries: training_retries()
    conda:
        TRAINING_ENV
    resources:
        **training_rule_resources(),
    params:
        run=run_config,
        resources=verl_resources,
        # outside the rule's outputs: Snakemake deletes those on failure, verl resumes from here
        state_dir=lambda wc: LAYOUT.train_state(wc.run),
        # multi-node runs: the Ray launcher's CPUs per node, start timeout and network interfaces
        ray=ray_launcher_settings(),
    script:
        "../scripts/train-verl-run.py"


rule merge_verl_step:
    input:
        run=LAYOUT.run_dir("{run}"),
    output:
        directory(LAYOUT.merged_step("{run}", "{merged_step}")),
    log:
        LAYOUT.log("merge_verl_step", "{run}", "{merged_step}"),
    wildcard_constraints:
        run=ids_regex(runs_of("verl")),
        merged_step="step_[0-9]+|final",
    conda:
        TRAINING_ENV
    threads: 2
    params:
        step=merged_step_value,
    script:
        "../scripts/merge-verl-step.py"


rule check_frozen:
    input:
        base=run_base_manifest,
        run=LAYOUT.run_dir("{run}"),
        merged=LAYOUT.merged_step("{run}", "{merged_step}"),
    output:
        LAYOUT.frozen_check("{run}", "{merged_step}"),
    log:
        LAYOUT.log("check_frozen", "{run}", "{merged_step}"),
    wildcard_constraints:
        run=ids_regex([r for r in runs_of("verl") if is_masked(r)]),
        merged_step="step_[0-9]+|final",
    conda:
        ANALYSIS_ENV
    script:
        "../scripts/check-frozen.py"


rule run_checkpoint:
    input:
        unpack(run_checkpoint_inputs),
    output:
        LAYOUT.manifest("{run_ckpt}"),
    log:
        LAYOUT.log("run_checkpoint", "{run_ckpt}"),
    localrule: True
    conda:
        ANALYSIS_ENV
    params:
        step=run_checkpoint_step,
    script:
        "../scripts/run-checkpoint.py"
