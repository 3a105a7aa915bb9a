from offprincipal.jobs import setup_job
from offprincipal.toy.task import build_datasets

setup_job(snakemake.log[0])
build_datasets(snakemake.output[0], snakemake.params.seed, **snakemake.params.datasets)
