from offprincipal.analysis import cross_run_jaccard
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0])
cross_run_jaccard(
    dict(zip(snakemake.params.runs, snakemake.input)),
    snakemake.output[0],
    layer=snakemake.params.layer,
    kinds=snakemake.params.kinds,
)
