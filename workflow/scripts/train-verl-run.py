import json
import os
import sys
from pathlib import Path

# The training env installs verl's pins, not the project's; the project is imported from the
# checkout, by this process and by the verl processes it starts (Ray workers inherit it).
REPO = str(Path(snakemake.scriptdir).resolve().parents[1])
sys.path.insert(0, REPO)
os.environ["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])

from offprincipal.jobs import setup_job  # noqa: E402
from offprincipal.training import RunSpec, train  # noqa: E402
from offprincipal.training.data import TRAIN_FILE  # noqa: E402

setup_job(snakemake.log[0])
run = snakemake.params.run
train(
    RunSpec.from_dict(dict(run["spec"])),
    json.load(open(snakemake.input.base))["path"],
    snakemake.output[0],
    backend="verl",
    state_dir=snakemake.params.state_dir,
    train_files=[str(Path(snakemake.input.data) / TRAIN_FILE)],
    experiment_name=snakemake.wildcards.run,
    resources=dict(snakemake.params.resources),
    base_checkpoint=run["base"],
    mask_file=snakemake.input.get("masks"),
    pissa_dir=snakemake.input.get("pissa"),
    ray=dict(snakemake.params.ray),
)
