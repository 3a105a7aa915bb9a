from offprincipal.compare.report import report_from_workflow
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0])
report_from_workflow(
    snakemake.wildcards.base_ckpt,
    pairs=snakemake.params.pairs,
    checkpoints=snakemake.params.checkpoints,
    metrics=snakemake.params.metrics,
    inputs=snakemake.input,
    outputs=snakemake.output,
)
