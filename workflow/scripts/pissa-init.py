import json
import os
import sys
from pathlib import Path

REPO = str(Path(snakemake.scriptdir).resolve().parents[1])  # see train-verl-run.py
sys.path.insert(0, REPO)
os.environ["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])

from offprincipal.jobs import setup_job  # noqa: E402
from offprincipal.training.pissa import init_pissa  # noqa: E402
from offprincipal.training.spec import RunSpec  # noqa: E402

setup_job(snakemake.log[0], snakemake.threads)
spec = RunSpec.from_dict(dict(snakemake.params.spec))
init_pissa(
    json.load(open(snakemake.input.base))["path"],
    snakemake.output[0],
    rank=spec.adapter_rank,
    alpha=spec.adapter_alpha,
    target_modules=list(spec.adapter_target_modules),
)
