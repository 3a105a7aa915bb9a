# Stage 2: weight-space metrics. Each checkpoint's SVD is its own output, reused by every
# pair, mask and figure; each pair is compared once; cross-run analyses read packed masks.


rule compare_pair:
    input:
        unpack(pair_manifests),
        lineage=lambda wildcards: lineage_first([wildcards.pair]),
    output:
        updates=LAYOUT.pair_file("{pair}", "updates.csv"),
        masks=LAYOUT.pair_file("{pair}", "masks.npz"),
    log:
        LAYOUT.log("compare_pair", "{pair}"),
    benchmark:
        LAYOUT.benchmark("compare_pair", "{pair}")
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
        manifest=LAYOUT.manifest("{ckpt}"),
        lineage=lambda wildcards: lineage_first(pairs_finetuning(wildcards.ckpt)),
    output:
        LAYOUT.spectra("{ckpt}"),
    log:
        LAYOUT.log("spectra", "{ckpt}"),
    benchmark:
        LAYOUT.benchmark("spectra", "{ckpt}")
    # before the sparsity job: it then runs just before pair geometry, which reads the same
    # tensors while the page cache still holds them
    priority: 1
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
        masks=LAYOUT.pair_file("{pair}", "masks.npz"),
    output:
        geometry=LAYOUT.pair_file("{pair}", "geometry.csv"),
        angles=LAYOUT.pair_file("{pair}", "angles.csv"),
    log:
        LAYOUT.log("pair_geometry", "{pair}"),
    benchmark:
        LAYOUT.benchmark("pair_geometry", "{pair}")
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
        LAYOUT.crossrun("{crossrun}"),
    log:
        LAYOUT.log("crossrun_jaccard", "{crossrun}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        runs=crossrun_runs,
        layer=crossrun_layer,
        kinds=METRICS["matrix_kinds"],
    script:
        "../scripts/crossrun-jaccard.py"
