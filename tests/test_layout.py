"""offprincipal.layout: one place for every results path, for ids and for Snakemake patterns."""

import pytest

from offprincipal.layout import Layout


def test_paths_for_ids_and_for_wildcard_patterns():
    at = Layout.of({"paths": {"results": "results"}, "name": "toy"})
    assert at.root == "results/toy"
    assert at.manifest("dapo_a_final") == "results/toy/checkpoints/dapo_a_final.json"
    assert at.manifest("{ckpt}") == "results/toy/checkpoints/{ckpt}.json"
    assert at.pair_file("{pair}", "updates.csv") == "results/toy/pairs/{pair}/updates.csv"
    assert at.paired("fig9") == "results/toy/eval/paired/fig9.csv"
    assert at.paired("fig9", ood=True) == "results/toy/eval/paired/fig9.ood.csv"
    assert at.artifact_file("fig4", "figure", "png") == "results/toy/figures/fig4.png"
    assert at.sidecar("table1", "table") == "results/toy/tables/table1.provenance.json"
    assert at.log("toy_datasets") == "results/toy/logs/toy_datasets.log"
    assert at.log("evaluate", "{suite}", "{ckpt}") == "results/toy/logs/evaluate/{suite}/{ckpt}.log"
    assert at.benchmark("spectra", "{ckpt}") == "results/toy/benchmarks/spectra/{ckpt}.tsv"
    assert at.merged_step("r", "final") == "results/toy/merged/r/final"


def test_unknown_per_pair_or_report_file_is_refused():
    at = Layout("r")
    with pytest.raises(ValueError, match="unknown per-pair file 'update.csv'"):
        at.pair_file("p", "update.csv")
    with pytest.raises(ValueError, match="unknown compare report file"):
        at.compare_file("b", "index.html")
