from offprincipal.jobs import setup_job
from offprincipal.toy.world import run_checkpoint

setup_job(snakemake.log[0])
run_checkpoint(snakemake.wildcards.run_ckpt, snakemake.input[0], snakemake.params.step, snakemake.output[0])
