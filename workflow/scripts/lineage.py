from offprincipal.checkpoints.lineage import lineage_report
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0])
lineage_report(snakemake.input.base, snakemake.input.ft, snakemake.output[0])
