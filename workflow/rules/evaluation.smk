# Evaluation: every (suite, checkpoint) the config or an artifact names, through lm-eval with
# the configured backend (hf on a CPU, vLLM on GPUs), at a fixed path per (suite, checkpoint);
# then each accuracy artifact's paired comparisons.


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        result=f"{RESULTS}/eval/{{suite}}/{{ckpt}}.json",
        samples=f"{RESULTS}/eval/{{suite}}/{{ckpt}}.samples.jsonl.gz",
    log:
        f"{RESULTS}/logs/evaluate/{{suite}}/{{ckpt}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{suite}}/{{ckpt}}.tsv"
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
        f"{RESULTS}/eval/paired/{{evaluated}}.csv",
    log:
        f"{RESULTS}/logs/paired_evaluations/{{evaluated}}.log",
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
        f"{RESULTS}/eval/paired/{{evaluated}}.ood.csv",
    log:
        f"{RESULTS}/logs/paired_evaluations_ood/{{evaluated}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        contrasts=contrasts_of,
    script:
        "../scripts/paired-evaluations.py"
