# Stage 4, on request: the lineage check of a pair, and one base checkpoint's pairs in one
# self-contained report (what `offprincipal compare` runs; any config can ask for it:
# `snakemake <results>/<name>/compare/<base>/report.html`).
from offprincipal.compare.inputs import pairs_of_base, report_inputs


rule lineage:
    input:
        unpack(pair_manifests),
    output:
        LAYOUT.pair_file("{pair}", "lineage.json"),
    log:
        LAYOUT.log("lineage", "{pair}"),
    # before a base's spectra, which do not wait for it (metrics.lineage_first)
    priority: 10
    conda:
        "../../envs/offprincipal.yaml"
    script:
        "../scripts/lineage.py"


rule compare_report:
    input:
        unpack(lambda wildcards: report_inputs(wildcards.base_ckpt, PAIRS, LAYOUT)),
    output:
        html=LAYOUT.compare_file("{base_ckpt}", "report.html"),
        json=LAYOUT.compare_file("{base_ckpt}", "report.json"),
        sparsity=LAYOUT.compare_file("{base_ckpt}", "sparsity_layers.csv"),
        geometry=LAYOUT.compare_file("{base_ckpt}", "geometry_layers.csv"),
        jaccard=LAYOUT.compare_file("{base_ckpt}", "jaccard.csv"),
        consensus=LAYOUT.compare_file("{base_ckpt}", "consensus.csv"),
    log:
        LAYOUT.log("compare_report", "{base_ckpt}"),
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
