# UV restoration (Jin et al., arXiv 2508.16546): checkpoints with the base's singular vectors
# put back into a fine-tune, and per-pair singular-vector rotation tables from the spectra
# caches of metrics.smk. Both are SVD work on a CPU (or the cluster's SVD nodes).


rule restore_checkpoint:
    input:
        unpack(restored_parent_manifests),
    output:
        checkpoint=directory(LAYOUT.checkpoint("{rst_ckpt}")),
        manifest=LAYOUT.manifest("{rst_ckpt}"),
    log:
        LAYOUT.log("restore_checkpoint", "{rst_ckpt}"),
    benchmark:
        LAYOUT.benchmark("restore_checkpoint", "{rst_ckpt}")
    conda:
        "../../envs/offprincipal.yaml"
    threads: 2
    resources:
        **svd_rule_resources(),
    params:
        recipe=restored_recipe,
        device=config["device"],
    script:
        "../scripts/restore-checkpoint.py"


rule pair_rotation:
    input:
        unpack(pair_spectra),
    output:
        curve=LAYOUT.pair_file("{pair}", "rotation.csv"),
        layers=LAYOUT.pair_file("{pair}", "rotation_layers.csv"),
    log:
        LAYOUT.log("pair_rotation", "{pair}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        window=METRICS["rotation_window"],
    script:
        "../scripts/pair-rotation.py"
