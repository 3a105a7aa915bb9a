from pathlib import Path

from offprincipal.artifacts.provenance import build_record, write_sidecar
from offprincipal.artifacts.render import render_artifact
from offprincipal.jobs import setup_job

setup_job(snakemake.log[0])
name = snakemake.params.name
inputs = {key: list(files) for key, files in snakemake.input.items()}
outputs = [path for key, path in snakemake.output.items() if key != "provenance"]
render_artifact(name, inputs, outputs, **snakemake.params.artifact)
# the sidecar lies in {results}/{figures,tables}/, so the results folder is its grandparent
sidecar = Path(snakemake.output.provenance)
record = build_record(name, inputs, outputs, snakemake.params.artifact, results=sidecar.parent.parent)
write_sidecar(sidecar, record)
