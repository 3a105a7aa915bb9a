from offprincipal.jobs import setup_job
from offprincipal.metrics.rotation import write_rotation_tables

setup_job(snakemake.log[0])
write_rotation_tables(
    snakemake.input.base_spectra,
    snakemake.input.ft_spectra,
    curve_csv=snakemake.output.curve,
    layers_csv=snakemake.output.layers,
    window=snakemake.params.window,
)
