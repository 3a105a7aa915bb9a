from offprincipal.jobs import setup_job
from offprincipal.restoration import build_restored

setup_job(snakemake.log[0], snakemake.threads)
build_restored(
    snakemake.wildcards.rst_ckpt,
    snakemake.input.base,
    snakemake.input.finetuned,
    snakemake.output.checkpoint,
    snakemake.output.manifest,
    **snakemake.params.recipe,
    device=snakemake.params.device,
)
