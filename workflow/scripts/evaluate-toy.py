from offprincipal.jobs import setup_job
from offprincipal.toy.world import evaluate_checkpoint

setup_job(snakemake.log[0], snakemake.threads)
settings = dict(snakemake.params.eval)
evaluate_checkpoint(
    snakemake.input.manifest,
    snakemake.input.data,
    snakemake.output[0],
    task=settings["task"],
    problems=settings["problems"],
    samples=settings["samples"],
    temperature=settings["temperature"],
    max_new_tokens=settings["max_new_tokens"],
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
