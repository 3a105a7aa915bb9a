# offprincipal: where in weight space did RL (or SFT) change a model?
# Reproduces the weight-space analyses of arXiv 2511.08567 ("The Path Not Taken").
# This file only wires stages together; the logic lives in the `offprincipal` package.

from snakemake.utils import min_version

min_version("9.0")


# The default config is loaded only when none is given on the command line: Snakemake would
# otherwise merge `--configfile config/paper.yaml` into it, leaking toy checkpoints and metric
# settings into the paper run.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/checkpoints.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/training_common.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/restoration.smk"
include: "workflow/rules/artifacts.smk"
include: "workflow/rules/compare.smk"


rule all:
    default_target: True
    input:
        all_artifact_outputs(),
        all_evaluation_outputs(),
