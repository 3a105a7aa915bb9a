from offprincipal.evaluation.stage import write_paired_table
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0])
write_paired_table(snakemake.params.contrasts, dict(snakemake.input.items()), snakemake.output[0])
