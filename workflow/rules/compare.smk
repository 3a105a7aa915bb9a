# Stage 4, on request: the lineage check of a pair, and one base checkpoint's pairs in one
# self-contained report (what `offprincipal compare` runs; any config can ask for it:
# `snakemake <results>/<name>/compare/<base>/report.html`).
from offprincipal.compare.inputs import pairs_of_base, report_inputs


rule lineage:
    input:
        unpack(pair_manifests),
    output:
        f"{RESULTS}/pairs/{{pair}}/lineage.json",
    log:
        f"{RESULTS}/logs/lineage/{{pair}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    script:
        "../scripts/lineage.py"


rule compare_report:
    input:
        unpack(
            lambda wildcards: report_inputs(
                wildcards.base_ckpt, PAIRS, pair_file, spectra, manifest
            )
        ),
    output:
        html=f"{RESULTS}/compare/{{base_ckpt}}/report.html",
        json=f"{RESULTS}/compare/{{base_ckpt}}/report.json",
        sparsity=f"{RESULTS}/compare/{{base_ckpt}}/sparsity_layers.csv",
        geometry=f"{RESULTS}/compare/{{base_ckpt}}/geometry_layers.csv",
        jaccard=f"{RESULTS}/compare/{{base_ckpt}}/jaccard.csv",
        consensus=f"{RESULTS}/compare/{{base_ckpt}}/consensus.csv",
    log:
        f"{RESULTS}/logs/compare_report/{{base_ckpt}}.log",
    wildcard_constraints:
        base_ckpt=ids_regex({p["base"] for p in PAIRS.values()}),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        pairs=lambda wildcards: {
            pid: PAIRS[pid] for pid in pairs_of_base(wildcards.base_ckpt, PAIRS)
        },
        checkpoints=CHECKPOINTS,
        metrics=METRICS,
    script:
        "../scripts/compare-report.py"
