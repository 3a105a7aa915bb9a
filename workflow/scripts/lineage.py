from offprincipal.checkpoints.lineage import lineage_report
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0])
record = lineage_report(snakemake.input.base, snakemake.input.ft, snakemake.output[0])
if record["warning"]:  # on the terminal now, while the metrics run (the log has it too)
    print(f"\nWARNING: {record['warning']}\n", flush=True)
