# Names and input functions of the training rules (training.smk).

from offprincipal.config import datasets as config_datasets

DATASETS = config_datasets(config)
TRAINING_ENV = "../../envs/training.yaml"
ANALYSIS_ENV = "../../envs/offprincipal.yaml"


def runs_of(backend):
    return [r for r, spec in RUNS.items() if spec["backend"] == backend]


def datasets_from(source):
    return [d for d, spec in DATASETS.items() if spec["source"] == source]


def run_spec(run):
    return RUNS[run]["spec"]


def is_masked(run):
    return run_spec(run).get("mask", "none") != "none"


def is_pissa(run):
    return run_spec(run).get("adapter", "none") == "pissa"


def dataset_dir(ds):
    return LAYOUT.dataset(ds)


def toy_task_of_run(wildcards):
    return DATASETS[RUNS[wildcards.run]["data"]]["task"]


def verl_run_inputs(wildcards):
    run = wildcards.run
    inputs = {
        "base": LAYOUT.manifest(RUNS[run]["base"]),
        "data": dataset_dir(RUNS[run]["data"]),
    }
    if is_masked(run):
        inputs["masks"] = LAYOUT.training_mask(run)
    if is_pissa(run):
        inputs["pissa"] = LAYOUT.pissa_init(run)
    return inputs


def verl_resources(wildcards):
    return RUNS[wildcards.run].get("verl", {})


def verl_gpus(wildcards):
    return verl_resources(wildcards).get("n_gpus_per_node", 8)


#: every key a verl run's SLURM resources may have (a single-node run leaves mpi empty)
TRAINING_RESOURCE_KEYS = (
    "nodes",
    "gres",
    "tasks_per_gpu",
    "cpus_per_task",
    "mem_mb",
    "runtime",
    "slurm_extra",
    "mpi",
    "tasks",
)


def training_resource(key):
    """One resource of a verl run: the whole nodes its `verl` block asks for (offprincipal.cluster).

    A single-node run gets `mpi: ""`: the key's presence stops the jobstep plugin wrapping the
    job in `srun -n1`, so the run has the whole allocation; its empty value is no MPI job.
    """

    def of_run(wildcards):
        res = cluster_resources.training_resources(
            CLUSTER, verl_resources(wildcards), run=wildcards.run
        )
        return res.get(key, {"mpi": "", "tasks": 1}.get(key))

    return of_run


def training_rule_resources():
    if CLUSTER is None:
        return {"gpu": verl_gpus}
    return {key: training_resource(key) for key in TRAINING_RESOURCE_KEYS}


def ray_launcher_settings():
    """offprincipal.training.ray_slurm settings from the cluster section (none without one)."""
    if CLUSTER is None:
        return {}
    return {
        "num_cpus": CLUSTER["cpus_per_node"],
        "start_timeout_s": CLUSTER["ray_start_timeout_s"],
        "network": cluster_resources.ray_network(CLUSTER),
    }


def training_retries():
    """Resubmissions of a training job: each resumes from its last verl checkpoint (None:
    Snakemake's --retries, as for every other rule)."""
    return CLUSTER["training_retries"] if CLUSTER else None


def merged_step_name(step):
    return "final" if step == "final" else f"step_{step}"


def run_checkpoint_inputs(wildcards):
    """A TRL run's checkpoints are in its run directory; a verl run's are merged per step, and
    a masked verl run's merged checkpoint is used only after its frozen-entry check passed.
    """
    ck = CHECKPOINTS[wildcards.run_ckpt]
    run = ck["run"]
    inputs = {"run": LAYOUT.run_dir(run)}
    if RUNS[run]["backend"] == "verl":
        name = merged_step_name(ck["step"])
        inputs["merged"] = LAYOUT.merged_step(run, name)
        if is_masked(run):
            inputs["frozen_check"] = LAYOUT.frozen_check(run, name)
    return inputs


def merged_step_value(wildcards):
    name = wildcards.merged_step
    return "final" if name == "final" else int(name.removeprefix("step_"))
