from offprincipal.checkpoints.hub import fetch_checkpoint
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0])
spec = snakemake.params.spec
fetch_checkpoint(
    snakemake.wildcards.hub_ckpt,
    spec["repo"],
    spec["revision"],
    cache_dir=snakemake.params.cache_dir,
    gated=spec.get("gated", False),
    manifest=snakemake.output[0],
)
