from offprincipal.jobs import setup_job

# before numpy and torch are imported: the pass's worker threads share the main heap
setup_job(snakemake.log[0], snakemake.threads, shared_arena=True)

from offprincipal.analysis import pair_geometry  # noqa: E402

pair_geometry(
    snakemake.input.base,
    snakemake.input.ft,
    snakemake.input.base_spectra,
    snakemake.input.ft_spectra,
    snakemake.input.masks,
    geometry_csv=snakemake.output.geometry,
    angles_csv=snakemake.output.angles,
    angle_ks=snakemake.params.angle_ks,
    report_k=snakemake.params.report_k,
    principal_rank_k=snakemake.params.principal_rank_k,
    mask_alpha=snakemake.params.mask_alpha,
    update_rank=snakemake.params.update_rank,
    cast_to_bf16=snakemake.params.cast_to_bf16,
    device=snakemake.params.device,
)
