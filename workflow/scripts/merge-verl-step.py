import os
import sys
from pathlib import Path

REPO = str(Path(snakemake.scriptdir).resolve().parents[1])  # see train-verl-run.py
sys.path.insert(0, REPO)
os.environ["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])

from offprincipal.jobs import setup_job  # noqa: E402
from offprincipal.training.merge import merge_step  # noqa: E402

setup_job(snakemake.log[0], snakemake.threads)
merge_step(snakemake.input.run, snakemake.params.step, snakemake.output[0])
