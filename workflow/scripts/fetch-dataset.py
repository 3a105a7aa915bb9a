import os
import sys
from pathlib import Path

REPO = str(Path(snakemake.scriptdir).resolve().parents[1])  # see train-verl-run.py
sys.path.insert(0, REPO)
os.environ["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])

from offprincipal.jobs import setup_job  # noqa: E402
from offprincipal.training.data import build_hub_dataset  # noqa: E402

setup_job(snakemake.log[0])
build_hub_dataset(
    snakemake.wildcards.hub_ds,
    dict(snakemake.params.spec),
    snakemake.output.dataset,
    snakemake.output.manifest,
    cache_dir=snakemake.params.cache_dir,
)
