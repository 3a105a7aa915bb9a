from offprincipal.jobs import setup_job
from offprincipal.toy.world import train_toy_run

setup_job(snakemake.log[0], snakemake.threads)
train_toy_run(
    snakemake.wildcards.run,
    snakemake.params.run,
    snakemake.input.base,
    snakemake.input.data,
    snakemake.output[0],
    task=snakemake.params.task,
    threads=snakemake.threads,
)
