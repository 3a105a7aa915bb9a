from offprincipal.jobs import setup_job
from offprincipal.toy.world import run_checkpoint

setup_job(snakemake.log[0])
run_checkpoint(
    snakemake.wildcards.run_ckpt,
    snakemake.input.run,
    snakemake.params.step,
    snakemake.output[0],
    checkpoint_dir=snakemake.input.get("merged"),
)
