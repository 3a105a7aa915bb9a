from offprincipal.analysis import compare_pair
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0], snakemake.threads)
compare_pair(
    snakemake.input.base,
    snakemake.input.ft,
    updates_csv=snakemake.output.updates,
    masks_npz=snakemake.output.masks,
    eta=snakemake.params.eta,
    abs_tolerance=snakemake.params.abs_tolerance,
    cast_to_bf16=snakemake.params.cast_to_bf16,
    device=snakemake.params.device,
)
