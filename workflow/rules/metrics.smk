# Stage 2: weight-space metrics. Each checkpoint's SVD is its own output, reused by every
# pair, mask and figure; each pair is compared once; cross-run analyses read packed masks.


rule compare_pair:
    input:
        unpack(pair_manifests),
    output:
        updates=f"{RESULTS}/pairs/{{pair}}/updates.csv",
        masks=f"{RESULTS}/pairs/{{pair}}/masks.npz",
    log:
        f"{RESULTS}/logs/compare_pair/{{pair}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/compare_pair/{{pair}}.tsv"
    conda:
        "../../envs/offprincipal.yaml"
    threads: 2
    params:
        eta=METRICS["eta"],
        abs_tolerance=METRICS["abs_tolerance"],
        cast_to_bf16=METRICS["cast_to_bf16"],
        device=config["device"],
    script:
        "../scripts/compare-pair.py"


rule spectra:
    input:
        manifest=f"{RESULTS}/checkpoints/{{ckpt}}.json",
    output:
        f"{RESULTS}/spectra/{{ckpt}}.safetensors",
    log:
        f"{RESULTS}/logs/spectra/{{ckpt}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/spectra/{{ckpt}}.tsv"
    conda:
        "../../envs/offprincipal.yaml"
    threads: 2
    resources:
        **svd_rule_resources(),
    params:
        kinds=METRICS["matrix_kinds"],
        top_k=METRICS["svd_top_k"],
        svd_dtype=METRICS["svd_dtype"],
        cast_to_bf16=METRICS["cast_to_bf16"],
        device=config["device"],
    script:
        "../scripts/spectra.py"


rule pair_geometry:
    input:
        unpack(pair_manifests),
        unpack(pair_spectra),
        masks=f"{RESULTS}/pairs/{{pair}}/masks.npz",
    output:
        geometry=f"{RESULTS}/pairs/{{pair}}/geometry.csv",
        angles=f"{RESULTS}/pairs/{{pair}}/angles.csv",
    log:
        f"{RESULTS}/logs/pair_geometry/{{pair}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pair_geometry/{{pair}}.tsv"
    conda:
        "../../envs/offprincipal.yaml"
    threads: 2
    resources:
        **svd_rule_resources(),
    params:
        angle_ks=METRICS["angle_ks"],
        report_k=METRICS["report_k"],
        principal_rank_k=METRICS["principal_rank_k"],
        mask_alpha=METRICS["mask_alpha"],
        update_rank=METRICS["update_rank"],
        cast_to_bf16=METRICS["cast_to_bf16"],
        device=config["device"],
    script:
        "../scripts/pair-geometry.py"


rule crossrun_jaccard:
    input:
        crossrun_masks,
    output:
        f"{RESULTS}/crossrun/{{crossrun}}.csv",
    log:
        f"{RESULTS}/logs/crossrun_jaccard/{{crossrun}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        runs=crossrun_runs,
        layer=crossrun_layer,
        kinds=METRICS["matrix_kinds"],
    script:
        "../scripts/crossrun-jaccard.py"
