"""offprincipal.artifacts.inputs.artifact_inputs: the files the workflow wires into each renderer."""

from __future__ import annotations

import pytest

from offprincipal.artifacts.inputs import artifact_inputs, evaluation_contrasts

PAIRS = {"a": {"base": "b0", "finetuned": "r1_final"}, "c": {"base": "b0", "finetuned": "r2_s5"}}
CHECKPOINTS = {
    "b0": {"source": "toy_base"},
    "r1_final": {"source": "run", "run": "r1", "step": "final"},
    "r2_s5": {"source": "run", "run": "r2", "step": 5},
}


def test_paths_are_keyed_by_input_and_ordered_like_the_pairs():
    got = artifact_inputs("table4", {"pairs": ["c", "a"], "suite": "s"}, pairs=PAIRS, checkpoints=CHECKPOINTS,
                          results="res/x")
    assert got == {
        "updates": ["res/x/pairs/c/updates.csv", "res/x/pairs/a/updates.csv"],
        "base_manifests": ["res/x/checkpoints/b0.json", "res/x/checkpoints/b0.json"],
        "ft_manifests": ["res/x/checkpoints/r2_s5.json", "res/x/checkpoints/r1_final.json"],
        "runs": ["res/x/runs/r2", "res/x/runs/r1"],
        "base_eval": ["res/x/eval/s/b0.json", "res/x/eval/s/b0.json"],
        "ft_eval": ["res/x/eval/s/r2_s5.json", "res/x/eval/s/r1_final.json"],
        "paired": ["res/x/eval/paired/table4.csv"],
    }
    fig4 = artifact_inputs("fig4", {"pairs": ["a"]}, pairs=PAIRS, checkpoints=CHECKPOINTS, results="res/x")
    assert fig4["base_spectra"] == ["res/x/spectra/b0.safetensors"]
    assert list(fig4) == ["geometry", "angles", "base_spectra", "ft_spectra", "base_manifests", "ft_manifests"]
    assert artifact_inputs("fig12", {"pairs": ["a", "c"]}, pairs=PAIRS, checkpoints={}, results="r") == {
        "jaccard": ["r/crossrun/fig12.csv"],
        "base_manifests": ["r/checkpoints/b0.json", "r/checkpoints/b0.json"],
        "ft_manifests": ["r/checkpoints/r1_final.json", "r/checkpoints/r2_s5.json"],
    }


def test_a_training_log_figure_waits_for_its_checkpoints_manifests():
    # fig15 reads only run logs, but its sidecar records the pairs' checkpoints: the render job
    # must declare their manifests, or it races the job that saves the run's final checkpoint
    got = artifact_inputs("fig15", {"pairs": ["a"]}, pairs=PAIRS, checkpoints=CHECKPOINTS, results="r")
    assert got == {"runs": ["r/runs/r1"], "base_manifests": ["r/checkpoints/b0.json"],
                   "ft_manifests": ["r/checkpoints/r1_final.json"]}


def test_training_log_of_a_checkpoint_no_run_saved_is_refused():
    pairs = {**PAIRS, "odd": {"base": "r1_final", "finetuned": "b0"}}
    with pytest.raises(ValueError, match="'fig15' reads training logs, but checkpoint 'b0' is of source 'toy_base'"):
        artifact_inputs("fig15", {"pairs": ["a", "odd"]}, pairs=pairs, checkpoints=CHECKPOINTS, results="r")


def test_contrasts_are_each_fine_tune_against_its_base_then_the_reference_then_the_listed_ones():
    spec = {"pairs": ["c", "a"], "reference": "a", "contrasts": [["r2_s5", "r1_final"], ["b0", "r2_s5"]]}
    assert evaluation_contrasts(spec, PAIRS) == [
        ("r2_s5", "b0"), ("r1_final", "b0"),  # every fine-tune minus its base
        ("r2_s5", "r1_final"),  # minus the reference's fine-tune (not the reference against itself)
        ("b0", "r2_s5"),  # the listed contrast already present above is not repeated
    ]
