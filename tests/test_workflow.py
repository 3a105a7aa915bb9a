"""The configs, the DAG and a full run of the default pipeline."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from offprincipal.artifacts.catalogue import ARTIFACTS, CHECKPOINT_ONLY, DERIVED, OOD_ARTIFACTS
from offprincipal.config import ConfigError, load, validate

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=REPO, timeout=600):
    return subprocess.run(SNAKEMAKE + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def default_config():
    return yaml.safe_load((REPO / "config" / "synthetic.yaml").read_text())


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["metrics"].update(eta=-1), "metrics.eta"),
        (lambda c: c["pairs"]["syn_base__sft"].update(base="nope"), "pairs.syn_base__sft.base"),
        (lambda c: c["artifacts"]["fig4"]["pairs"].append("nope"), "artifacts.fig4.pairs[2]"),
        (lambda c: c["metrics"].update(principal_rank_k=999), "metrics.principal_rank_k"),
        (lambda c: c["checkpoints"]["syn_sft"].update(recipe="magic"), "checkpoints.syn_sft.recipe"),
        (lambda c: c["checkpoints"]["syn_sft"].pop("from"), "checkpoints.syn_sft.from"),
        (lambda c: c.update(typo_key=1), "<top level>"),
        (lambda c: c["artifacts"].update(fig99={"pairs": ["syn_base__sft"]}), "artifacts"),
    ],
)
def test_invalid_config_fails_naming_the_key(default_config, edit, key):
    config = copy.deepcopy(default_config)
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert f"'{key}'" in str(err.value)


def test_schema_fills_defaults_without_leaking_between_checkpoint_kinds():
    config = load(REPO / "config" / "paper.yaml")
    hub = config["checkpoints"]["deepscaler_1p5b"]
    assert "scale" not in hub and hub["gated"] is False
    syn = load(REPO / "config" / "synthetic.yaml")["checkpoints"]["syn_rl_1"]
    assert "gated" not in syn and syn["step_fraction"] == 1.0


def test_paper_catalog_covers_the_papers_public_checkpoints():
    config = load(REPO / "config" / "paper.yaml")
    pairs, ckpts = config["pairs"], config["checkpoints"]
    by_table = {t: [p for p in pairs.values() if p["table"] == t] for t in ("table1", "table3", "fig13")}
    assert {t: len(v) for t, v in by_table.items()} == {"table1": 15, "table3": 8, "fig13": 2}
    assert all("paper_sparsity" in p for p in by_table["table1"])
    v1, v2 = ckpts["nemotron_prorl_v1"], ckpts["nemotron_prorl_v2"]
    assert v1["repo"] == v2["repo"] == "nvidia/Nemotron-Research-Reasoning-Qwen-1.5B"
    assert v1["revision"] != v2["revision"]
    gated = {c["repo"] for c in ckpts.values() if c.get("gated")}
    assert {"meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Llama-3.1-8B"} <= gated
    # its own verl runs feed the training artifacts; the in-/out-of-distribution restoration
    # family is planned as restored checkpoints evaluated on the benchmarks (no OOD suite); the
    # claims table is derived, not configured
    assert set(config["artifacts"]) == set(ARTIFACTS) - set(OOD_ARTIFACTS) - set(DERIVED)


def test_default_config_renders_every_artifact():
    # but the restoration family, which has its own config (config/restore.yaml): the default
    # config's time budget is full; and the derived claims table
    assert set(load(REPO / "config" / "config.yaml")["artifacts"]) == set(ARTIFACTS) - set(OOD_ARTIFACTS) - set(DERIVED)


def test_synthetic_config_renders_every_checkpoint_only_artifact():
    assert set(load(REPO / "config" / "synthetic.yaml")["artifacts"]) == set(CHECKPOINT_ONLY)


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/synthetic.yaml", "config/paper.yaml", "config/restore.yaml"])
def test_dry_run_succeeds(configfile, tmp_path):
    result = snakemake("-n", "--quiet", "rules", f"--configfile={configfile}", "--directory", str(tmp_path), "-s", str(REPO / "Snakefile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_paper_dry_run_fetches_hub_checkpoints_and_builds_no_synthetic_ones(tmp_path):
    result = snakemake("table1", "-n", "--configfile=config/paper.yaml", "--directory", str(tmp_path), "-s", str(REPO / "Snakefile"))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "fetch_checkpoint" in out and "synthesize_checkpoint" not in out


def test_named_target_schedules_only_what_it_needs(tmp_path):
    result = snakemake("fig4", "-n", "--quiet", "rules", "--directory", str(tmp_path), "-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config" / "synthetic.yaml"))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "render_figure" in out and "render_table" not in out and "crossrun_jaccard" not in out


def test_slurm_profile_asks_gpus_for_the_spectral_pass(tmp_path):
    env = {**os.environ, "SLURM_ACCOUNT": "acct", "SLURM_CPU_PARTITION": "cpu", "SLURM_GPU_PARTITION": "gpu"}
    result = subprocess.run(
        SNAKEMAKE + ["fig4", "-n", "--profile", str(REPO / "profiles" / "slurm"), "--configfile=config/paper.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    spectra_block = out[out.index("rule spectra:"):]
    resources = next(line for line in spectra_block.splitlines() if "resources:" in line)
    assert "gpu=1" in resources and "slurm_partition=gpu" in resources


@pytest.mark.slow
def test_synthetic_pipeline_end_to_end(tmp_path):
    """The synthetic self-check: every checkpoint-only artifact, then nothing left to do, then a report."""
    args = ["-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(REPO / "config" / "synthetic.yaml")]
    result = snakemake("--cores", "2", *args, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = load(REPO / "config" / "synthetic.yaml")
    for name in CHECKPOINT_ONLY:
        art = ARTIFACTS[name]
        folder = "figures" if art.kind == "figure" else "tables"
        exts = ("pdf", "png") if art.kind == "figure" else ("csv", "md")
        for ext in exts:
            path = tmp_path / "results" / config["name"] / folder / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
    again = snakemake("-n", *args)
    assert "Nothing to be done" in again.stdout + again.stderr
    report = snakemake("--report", str(tmp_path / "report.zip"), *args)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.zip").stat().st_size > 0
