from offprincipal.checkpoints.verl import build_verl_checkpoint
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0], snakemake.threads)
build_verl_checkpoint(
    snakemake.wildcards.verl_ckpt,
    snakemake.params.path,
    snakemake.output.checkpoint,
    manifest=snakemake.output.manifest,
)
