from offprincipal.jobs import setup_job
from offprincipal.render import render_artifact

setup_job(snakemake.log[0])
render_artifact(
    snakemake.wildcards.get("figure") or snakemake.wildcards.get("table"),
    {name: list(files) for name, files in snakemake.input.items()},
    list(snakemake.output),
    **snakemake.params.artifact,
)
