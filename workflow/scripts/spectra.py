from offprincipal.analysis import compute_spectra
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0], snakemake.threads)
compute_spectra(
    snakemake.input.manifest,
    snakemake.output[0],
    kinds=snakemake.params.kinds,
    top_k=snakemake.params.top_k,
    svd_dtype=snakemake.params.svd_dtype,
    cast_to_bf16=snakemake.params.cast_to_bf16,
    device=snakemake.params.device,
)
