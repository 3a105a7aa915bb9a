from offprincipal.evaluation.stage import evaluate_manifest
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0], snakemake.threads)
evaluate_manifest(
    snakemake.input.manifest,
    suite=snakemake.params.suite,
    backend=snakemake.params.backend,
    backend_args=snakemake.params.backend_args,
    result_path=snakemake.output.result,
    samples_path=snakemake.output.samples,
    datasets_dir=snakemake.input.get("data"),
    threads=snakemake.threads,
)
