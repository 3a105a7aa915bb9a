from offprincipal.checkpoints.local import register_local_checkpoint
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0])
register_local_checkpoint(snakemake.wildcards.local_ckpt, snakemake.params.path, manifest=snakemake.output[0])
