# UV restoration (Jin et al., arXiv 2508.16546): checkpoints with the base's singular vectors
# put back into a fine-tune, and per-pair singular-vector rotation tables from the spectra
# caches of metrics.smk. Both are SVD work on a CPU (or the cluster's SVD nodes).


rule restore_checkpoint:
    input:
        unpack(restored_parent_manifests),
    output:
        checkpoint=directory(f"{RESULTS}/checkpoints/{{rst_ckpt}}"),
        manifest=f"{RESULTS}/checkpoints/{{rst_ckpt}}.json",
    log:
        f"{RESULTS}/logs/restore_checkpoint/{{rst_ckpt}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/restore_checkpoint/{{rst_ckpt}}.tsv"
    conda:
        "../../envs/offprincipal.yaml"
    threads: 2
    resources:
        **svd_rule_resources(),
    params:
        recipe=restored_recipe,
    script:
        "../scripts/restore-checkpoint.py"


rule pair_rotation:
    input:
        unpack(pair_spectra),
    output:
        curve=f"{RESULTS}/pairs/{{pair}}/rotation.csv",
        layers=f"{RESULTS}/pairs/{{pair}}/rotation_layers.csv",
    log:
        f"{RESULTS}/logs/pair_rotation/{{pair}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        window=METRICS["rotation_window"],
    script:
        "../scripts/pair-rotation.py"
