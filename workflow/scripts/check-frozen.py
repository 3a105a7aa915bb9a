import json
from pathlib import Path

from offprincipal.jobs import setup_job
from offprincipal.training.merge import check_frozen
from offprincipal.training.run_directory import MASK_FILE

setup_job(snakemake.log[0])
check_frozen(
    json.load(open(snakemake.input.base))["path"],
    snakemake.input.merged,
    Path(snakemake.input.run) / MASK_FILE,
    report=snakemake.output[0],
)
