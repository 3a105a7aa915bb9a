from offprincipal.jobs import setup_job
from offprincipal.toy.world import build_intervened

setup_job(snakemake.log[0])
build_intervened(
    snakemake.wildcards.int_ckpt,
    snakemake.input.parent,
    snakemake.output.checkpoint,
    snakemake.output.manifest,
    interventions=list(snakemake.params.interventions),
)
