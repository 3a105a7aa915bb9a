from offprincipal.jobs import setup_job
from offprincipal.toy.world import build_toy_base

setup_job(snakemake.log[0], snakemake.threads)
build_toy_base(
    snakemake.wildcards.toy_ckpt,
    snakemake.input.data,
    snakemake.output.checkpoint,
    snakemake.output.manifest,
    seed=snakemake.params.seed,
    recipe=dict(snakemake.params.recipe),
    threads=snakemake.threads,
)
