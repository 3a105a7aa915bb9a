import json

from offprincipal.jobs import setup_job
from offprincipal.training.masks import masks_from_checkpoint, save_masks
from offprincipal.training.spec import RunSpec

setup_job(snakemake.log[0], snakemake.threads)
spec = RunSpec.from_dict(dict(snakemake.params.spec))
base = json.load(open(snakemake.input.base))["path"]
masks = masks_from_checkpoint(base, spec.mask, alpha=spec.mask_alpha, rank_k=spec.mask_rank_k, seed=spec.mask_seed)
save_masks(snakemake.output[0], masks)
