# Evaluation: every (suite, checkpoint) the config or an artifact names, through lm-eval with
# the configured backend (hf on a CPU, vLLM on GPUs), at a fixed path per (suite, checkpoint);
# then each accuracy artifact's paired comparisons.


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        result=LAYOUT.eval_result("{suite}", "{ckpt}"),
        samples=LAYOUT.eval_samples("{suite}", "{ckpt}"),
    log:
        LAYOUT.log("evaluate", "{suite}", "{ckpt}"),
    benchmark:
        LAYOUT.benchmark("evaluate", "{suite}", "{ckpt}")
    conda:
        EVALUATION_ENV
    threads: 1
    resources:
        **evaluation_rule_resources(),
    params:
        suite=lambda wildcards: SUITES[wildcards.suite],
        backend=EVALUATIONS["backend"],
        backend_args=EVALUATIONS["backend_args"],
    script:
        "../scripts/evaluate.py"


rule paired_evaluations:
    input:
        unpack(paired_results),
    output:
        LAYOUT.paired("{evaluated}"),
    log:
        LAYOUT.log("paired_evaluations", "{evaluated}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        contrasts=contrasts_of,
    script:
        "../scripts/paired-evaluations.py"


# the same comparisons on an artifact's out-of-distribution suite (artifacts.<name>.ood_suite)
rule paired_evaluations_ood:
    input:
        unpack(paired_results_ood),
    output:
        LAYOUT.paired("{evaluated}", ood=True),
    log:
        LAYOUT.log("paired_evaluations_ood", "{evaluated}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        contrasts=contrasts_of,
    script:
        "../scripts/paired-evaluations.py"
