from offprincipal.checkpoints.synthetic import build_from_spec
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0], snakemake.threads)
build_from_spec(
    snakemake.wildcards.syn_ckpt,
    snakemake.params.spec,
    out_dir=snakemake.output.checkpoint,
    manifest=snakemake.output.manifest,
    parent_manifest=snakemake.input[0] if snakemake.input else None,
)
