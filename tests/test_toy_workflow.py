"""The default configuration (the toy world) end to end: every artifact from real toy runs,
nothing left to do on a second run, and a learning-rate change reruns only what it touches."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from offprincipal.artifacts.catalogue import ARTIFACTS
from offprincipal.config import load

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "config.yaml"


def snakemake(workdir, *args, configfile=CONFIG, timeout=1800):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           f"--configfile={configfile}", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def jobs_by_rule(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run."""
    table = dry_run_output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_every_artifact_is_rendered_from_toy_runs(toy_run):
    config = load(CONFIG)
    assert any(c["source"] == "toy_base" for c in config["checkpoints"].values())
    rendered = set(config["artifacts"]) | {"claims"}  # the restoration family has its own config
    for name, art in ARTIFACTS.items():
        if name not in rendered:
            continue
        folder = "figures" if art.kind == "figure" else "tables"
        for ext in (("pdf", "png") if art.kind == "figure" else ("csv", "md")):
            path = toy_run / "results" / config["name"] / folder / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path


@pytest.mark.slow
def test_claims_table_gives_every_claim_a_verdict_from_toy_runs(toy_run):
    from offprincipal.artifacts.claims import CLAIMS, NOT_MEASURED, VERDICTS

    config = load(CONFIG)
    table = pd.read_csv(toy_run / "results" / config["name"] / "tables" / "claims.csv", keep_default_na=False)
    assert list(table["claim"]) == [c.claim_id for c in CLAIMS]
    assert set(table["verdict"]) <= set(VERDICTS)
    # a claim goes unmeasured exactly when the default config renders none of its artifacts
    # (the UV-restoration claims need config/restore.yaml)
    rendered = set(config["artifacts"])
    expected_unmeasured = {c.claim_id for c in CLAIMS if not rendered & set(c.artifacts)}
    unmeasured = set(table.loc[table["verdict"] == NOT_MEASURED, "claim"])
    assert unmeasured == expected_unmeasured, table[["claim", "note"]]
    assert len(unmeasured) < len(CLAIMS) // 2
    measured = table[table["verdict"] != NOT_MEASURED]
    assert (measured["measured"].str.len() > 0).all()


@pytest.mark.slow
def test_report_holds_every_artifact_and_its_provenance(toy_run):
    report = toy_run / "report.zip"
    result = snakemake(toy_run, "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = zipfile.ZipFile(report).namelist()
    rendered = set(load(CONFIG)["artifacts"]) | {"claims"}
    for name, art in ARTIFACTS.items():
        if name not in rendered:
            continue
        shown = f"{name}.png" if art.kind == "figure" else f"{name}.csv"
        for file in (shown, f"{name}.provenance.json"):
            assert any(n.endswith(f"/{file}") for n in names), file  # the report stores data/raw/<hash>/<name>


@pytest.mark.slow
def test_notebooks_run_top_to_bottom_on_the_default_outputs(toy_run, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    config = load(CONFIG)
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        # the kernel inherits the environment
        monkeypatch.setenv("OFFPRINCIPAL_RESULTS", str(toy_run / "results" / config["name"]))
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (path.name, errors)


@pytest.mark.slow
def test_second_run_does_nothing(toy_run):
    result = snakemake(toy_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


@pytest.mark.slow
def test_changing_one_learning_rate_reruns_that_run_and_its_dependents_only(toy_run, tmp_path):
    config = yaml.safe_load(CONFIG.read_text())
    run = "dapo_b"
    config["runs"][run]["spec"]["lr"] *= 2
    edited = tmp_path / "config.yaml"
    edited.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(toy_run, "-n", configfile=edited)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = jobs_by_rule(out)
    assert jobs.get("train_run") == 1, jobs
    assert f"runs/{run}" in out
    assert "pretrain_toy_base" not in jobs and "toy_datasets" not in jobs and "intervene" not in jobs
    # only the pairs whose fine-tuned checkpoint comes from this run are compared again
    ckpts = [c for c, spec in config["checkpoints"].items() if spec.get("run") == run]
    pairs = [p for p, spec in config["pairs"].items() if spec["finetuned"] in ckpts]
    assert jobs.get("compare_pair") == len(pairs), (jobs, pairs)
    assert jobs.get("run_checkpoint") == len(ckpts), jobs
