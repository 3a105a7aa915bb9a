"""`offprincipal compare` end to end on tiny checkpoints of every source kind, its report's
numbers against the pipeline's CSVs and the checkpoints' bits, the HTML in a real headless
browser, caching on rerun, and clear errors (nothing published) on bad input."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from bitwise_reference import changed_bitwise
from offprincipal.checkpoints.reader import Checkpoint
from offprincipal.checkpoints.synthetic import build_base, build_variant
from offprincipal.cli import main as cli_main
from offprincipal.config import load as load_config

TESTS = Path(__file__).resolve().parent
SIZES = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=64)
HUB_REPO, HUB_COMMIT = "tiny-org/rl-two", "89abcdef0123456789abcdef0123456789abcdef"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def run_cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """The command in a subprocess, its stderr (Snakemake's log) merged into stdout in order."""
    return subprocess.run([sys.executable, "-m", "offprincipal.cli", "compare", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """base (single file), rl (sharded local), sft (raw verl FSDP2 shards), rl2 (a Hub id in a
    locally populated, offline Hugging Face cache)."""
    from test_hub import populate_cache

    tmp = tmp_path_factory.mktemp("compare")
    build_base(tmp / "base", seed=3, **SIZES)
    build_variant(tmp / "base", tmp / "rl_single", kind="offprincipal", seed=1, scale=1.0, shared_seed=5)
    build_variant(tmp / "base", tmp / "rl2", kind="offprincipal", seed=2, scale=1.0, shared_seed=5)
    build_variant(tmp / "base", tmp / "sft", kind="dense", seed=4, scale=1.0)
    # the same RL weights re-saved sharded, as save_pretrained(max_shard_size=...) does
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp / "rl_single", dtype=torch.bfloat16).save_pretrained(
        tmp / "rl", max_shard_size="40KB")
    assert len(list((tmp / "rl").glob("*.safetensors"))) > 1
    done = subprocess.run([sys.executable, str(TESTS / "verl_fsdp_writer.py"), str(tmp / "sft"), str(tmp / "run"), "7"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    cache = tmp / "hf-cache"
    populate_cache(cache, {p.name: p.read_bytes() for p in (tmp / "rl2").iterdir() if p.is_file()},
                   repo=HUB_REPO, commit=HUB_COMMIT)
    build_base(tmp / "wide", seed=3, **{**SIZES, "intermediate_size": 96})  # another architecture, on the Hub
    populate_cache(cache, {p.name: p.read_bytes() for p in (tmp / "wide").iterdir() if p.is_file()},
                   repo="tiny-org/wider", commit="1" * 40)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "2"}
    return tmp, env


@pytest.fixture(scope="module")
def pair_run(world):
    """One base and one fine-tune, the command's basic use."""
    tmp, env = world
    out = tmp / "out_pair"
    t0 = time.time()
    res = run_cli([str(tmp / "base"), str(tmp / "rl"), "-o", str(out), "--cores", "2"], env)
    assert res.returncode == 0, res.stdout[-4000:]
    return out, res, time.time() - t0


@pytest.fixture(scope="module")
def multi_run(world):
    """One base, three fine-tunes: sharded local, verl shards, Hub id."""
    tmp, env = world
    out = tmp / "out_multi"
    args = [str(tmp / "base"), str(tmp / "rl"), str(tmp / "run" / "global_step_7" / "actor"), f"{HUB_REPO}@main",
            "-o", str(out), "--cores", "2"]
    res = run_cli(args, env)
    assert res.returncode == 0, res.stdout[-4000:]
    return out, res


def test_pair_outputs_config_and_estimate(world, pair_run):
    tmp, _ = world
    out, res, seconds = pair_run
    for name in ("report.html", "report.json", "sparsity_layers.csv", "geometry_layers.csv", "config.yaml"):
        assert (out / name).is_file(), name
    assert not (out / "jaccard.csv").exists()  # one fine-tune: no cross-run numbers
    config = load_config(out / "config.yaml")  # the project's schema accepts what was written
    assert config["checkpoints"]["base"] == {"source": "local", "path": str((tmp / "base").resolve())}
    assert list(config["pairs"]) == ["base__rl"]
    text = res.stdout
    assert text.index("Estimate (before anything is read or downloaded)") < text.index("rule register_local_checkpoint")
    assert "disk in the output folder" in text and "time: about" in text
    manifest = json.loads((out / "pipeline" / "checkpoints" / "rl.json").read_text())
    assert manifest["source"] == "local" and manifest["fingerprint"].startswith("sha256:")
    print(f"offprincipal compare on the tiny pair: {seconds:.1f} s")


def test_report_numbers_equal_the_pipeline_csvs_and_the_bits(world, pair_run):
    tmp, _ = world
    out, _, _ = pair_run
    report = json.loads((out / "report.json").read_text())
    pair = report["pairs"]["base__rl"]
    updates = pd.read_csv(out / "pipeline" / "pairs" / "base__rl" / "updates.csv")
    # per-tensor counts against the bits of the files (the sharded fine-tune read shard by shard)
    base_w, ft_w = load_file(tmp / "base" / "model.safetensors"), {}
    for f in (tmp / "rl").glob("*.safetensors"):
        ft_w.update(load_file(f))
    for row in updates.itertuples():
        assert row.changed_eta == changed_bitwise(base_w[row.name], ft_w[row.name]), row.name
    ov = pair["sparsity"]["overall"]
    assert ov["numel"] == updates["numel"].sum()
    assert ov["sparsity_eta"] == pytest.approx(1 - updates["changed_eta"].sum() / updates["numel"].sum(), abs=1e-15)
    assert ov["sparsity_abs"] == pytest.approx(1 - updates["changed_abs"].sum() / updates["numel"].sum(), abs=1e-15)
    # layer × kind: JSON == the published CSV == a groupby of updates.csv
    lk = pd.read_csv(out / "sparsity_layers.csv")
    ref = updates.groupby(["layer", "kind"], dropna=False)[["numel", "changed_eta", "changed_abs"]].sum().reset_index()
    merged = lk.merge(ref, on=["layer", "kind"], suffixes=("", "_ref"), how="outer")
    assert len(merged) == len(lk) == len(ref)
    for c in ("numel", "changed_eta", "changed_abs"):
        assert (merged[c] == merged[f"{c}_ref"]).all()
    np.testing.assert_allclose(lk["sparsity_eta"], 1 - lk["changed_eta"] / lk["numel"], rtol=0, atol=1e-15)
    js = pd.DataFrame(pair["sparsity"]["by_layer_kind"])
    pd.testing.assert_frame_equal(js[["layer", "kind", "numel", "changed_eta", "changed_abs"]].astype({"layer": float}),
                                  lk[["layer", "kind", "numel", "changed_eta", "changed_abs"]].astype({"layer": float}))
    # geometry per layer: the mean of geometry.csv's matrices
    geo = pd.read_csv(out / "pipeline" / "pairs" / "base__rl" / "geometry.csv")
    for row in pair["geometry"]["by_layer"]:
        g = geo[geo["layer"] == row["layer"]]
        for c in ("nss", "max_angle_U_deg", "max_angle_V_deg", "overlap_princ", "density_princ", "overlap_low",
                  "density_low", "update_rank_ratio"):
            assert row[c] == pytest.approx(g[c].mean(), rel=1e-12), (row["layer"], c)
    assert pair["geometry"]["overall"]["nss"] == pytest.approx(geo["nss"].mean(), rel=1e-12)
    curves = pd.read_csv(out / "pipeline" / "pairs" / "base__rl" / "angles.csv")
    for row in pair["geometry"]["angle_curves"]:
        c = curves[(curves["side"] == row["side"]) & (curves["k"] == row["k"])]
        assert row["max_angle_deg"] == pytest.approx(c["max_angle_deg"].mean(), rel=1e-12)
    assert pair["lineage"]["warning"] is None
    # and the per-tensor / per-matrix rows are the CSVs' rows
    assert [r["name"] for r in pair["tensors"]] == list(updates["name"])
    assert [r["changed_eta"] for r in pair["tensors"]] == list(updates["changed_eta"])
    assert [r["name"] for r in pair["matrices"]] == list(geo["name"])
    np.testing.assert_allclose([r["nss"] for r in pair["matrices"]], geo["nss"], rtol=0, atol=0)
    # the summary states the numbers it was computed from
    assert f"{100 * ov['sparsity_eta']:.1f}%" in report["summary"]


@pytest.mark.slow
def test_multi_source_run_reads_every_kind_and_compares_runs(world, multi_run):
    tmp, _ = world
    out, res = multi_run
    report = json.loads((out / "report.json").read_text())
    ids = {f["id"]: f for f in report["finetuned"]}
    assert {f["source"] for f in ids.values()} == {"local", "verl", "hub"}
    hub_id = next(i for i, f in ids.items() if f["source"] == "hub")
    assert ids[hub_id]["commit"] == HUB_COMMIT
    verl_id = next(i for i, f in ids.items() if f["source"] == "verl")
    assert ids[verl_id]["verl_step"] == 7
    # the merged verl checkpoint holds the sft weights exactly (they were bf16 to begin with)
    merged = out / "pipeline" / "checkpoints" / verl_id
    with Checkpoint(merged) as m, Checkpoint(tmp / "sft") as s:
        assert m.names() == s.names()
        assert all(torch.equal(m.load(n).view(torch.int16), s.load(n).view(torch.int16)) for n in m.names())
    # counts of the hub and verl pairs against the files' bits
    base_w = load_file(tmp / "base" / "model.safetensors")
    for ft_dir, ft_id in ((tmp / "rl2", hub_id), (tmp / "sft", verl_id)):
        ft_w = load_file(ft_dir / "model.safetensors")
        updates = pd.read_csv(out / "pipeline" / "pairs" / f"base__{ft_id}" / "updates.csv")
        assert {r.name: r.changed_eta for r in updates.itertuples()} == {
            n: changed_bitwise(base_w[n], ft_w[n]) for n in updates["name"]}
    # Jaccard: JSON == jaccard.csv, and one pair recomputed from the masks
    from offprincipal.metrics.masks import MaskFile, popcount

    cross = report["crossrun"]
    jac = pd.read_csv(out / "jaccard.csv")
    assert len(jac) == 3 and len(cross["jaccard"]) == 3
    for row, js in zip(jac.itertuples(), cross["jaccard"]):
        assert (row.run_a, row.run_b) == (js["run_a"], js["run_b"])
        assert row.jaccard_pooled == pytest.approx(js["jaccard_pooled"], rel=1e-12)
    a, b = jac.iloc[0]["run_a"], jac.iloc[0]["run_b"]
    with MaskFile(out / "pipeline" / "pairs" / a / "masks.npz") as ma, MaskFile(out / "pipeline" / "pairs" / b / "masks.npz") as mb:
        inter = sum(popcount(ma.bits(n) & mb.bits(n)) for n in ma.names)
        union = sum(popcount(ma.bits(n) | mb.bits(n)) for n in ma.names)
    assert jac.iloc[0]["jaccard_pooled"] == pytest.approx(inter / union, rel=1e-12)
    cons = pd.read_csv(out / "consensus.csv")
    assert cons["observed"].sum() == pytest.approx(1.0) and len(cons) == 4
    assert "Across the 3 fine-tunes" in report["summary"]


def test_rerun_recomputes_nothing(world, pair_run):
    tmp, env = world
    out, _, _ = pair_run
    watched = out / "pipeline" / "pairs" / "base__rl" / "updates.csv"
    before = watched.stat().st_mtime_ns
    res = run_cli([str(tmp / "base"), str(tmp / "rl"), "-o", str(out), "--cores", "2"], env)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "Nothing to be done" in res.stdout
    assert watched.stat().st_mtime_ns == before
    assert (out / "report.html").is_file()


def test_a_failed_run_leaves_no_report_and_names_the_problem(world, pair_run, tmp_path):
    tmp, env = world
    out = tmp_path / "out"
    shutil.copytree(pair_run[0], out, symlinks=True)  # a folder with a report from a successful run
    assert (out / "report.html").is_file()
    res = run_cli([str(tmp / "base"), str(tmp / "rl"), "tiny-org/not-in-the-cache@main", "-o", str(out), "--cores", "2"], env)
    assert res.returncode == 1
    assert "no report was written" in res.stdout
    assert "could not fetch checkpoint 'not_in_the_cache_main'" in res.stdout and "tiny-org/not-in-the-cache" in res.stdout
    assert not (out / "report.html").exists() and not (out / "report.json").exists()


def test_profile_and_snakemake_arguments_pass_through(world, tmp_path):
    """A dry run under the SLURM profile: the same rules, with the profile's GPU resources."""
    tmp, env = world
    env = {**env, "SLURM_ACCOUNT": "acct", "SLURM_CPU_PARTITION": "cpu", "SLURM_GPU_PARTITION": "gpu"}
    repo = TESTS.parent
    res = subprocess.run(
        [sys.executable, "-m", "offprincipal.cli", "compare", str(tmp / "base"), str(tmp / "rl"), "-o", str(tmp_path / "o"),
         "--profile", "profiles/slurm", "-n", "--", "--quiet", "progress"],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    block = res.stdout[res.stdout.index("rule spectra:"):]
    resources = next(line for line in block.splitlines() if "resources:" in line)
    assert "gpu=1" in resources and "slurm_partition=gpu" in resources
    for rule in ("register_local_checkpoint", "lineage", "compare_pair", "pair_geometry", "compare_report"):
        assert f"rule {rule}:" in res.stdout, rule
    assert not (tmp_path / "o" / "report.html").exists()


def test_the_lineage_check_finishes_before_the_pairs_metrics_start(pair_run):
    """One Snakemake run, in Snakemake's own job log: the pair's sparsity job and the
    fine-tune's spectra start only after the lineage job has finished."""
    _, res, _ = pair_run
    log = res.stdout
    assert log.count("Building DAG of jobs") == 1
    finished = log.index("(Rule: lineage)")
    assert log.index("localrule compare_pair:") > finished
    assert log.index("wildcards: ckpt=rl\n") > finished


def test_an_architecture_mismatch_found_after_the_fetch_stops_before_any_metric(world, tmp_path):
    tmp, env = world
    out = tmp_path / "out"
    res = run_cli([str(tmp / "base"), "tiny-org/wider@main", "-o", str(out), "--cores", "2"], env)
    assert res.returncode == 1, res.stdout[-3000:]
    assert "fetching the checkpoints or the lineage check failed; no report was written" in res.stdout
    err = res.stdout[res.stdout.index("no report was written"):]
    assert "lineage (base__wider_main): " in err and "CheckpointMismatch" in err
    assert "'base'" in err and "'wider_main'" in err and "mlp.down_proj.weight" in err
    assert not (out / "report.html").exists()
    assert not (out / "pipeline" / "pairs" / "base__wider_main" / "updates.csv").exists()  # no metric ran


def _cli_error(args, capsys) -> str:
    assert cli_main(["compare", *args]) == 2
    return capsys.readouterr().err


def test_bad_input_is_refused_before_anything_runs(world, tmp_path, capsys):
    tmp, _ = world
    out = str(tmp_path / "out")
    empty = tmp_path / "not_a_checkpoint"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    err = _cli_error([str(tmp / "base"), str(empty), "-o", out], capsys)
    assert "not_a_checkpoint" in err and "not a Hugging Face checkpoint directory (no config.json)" in err
    err = _cli_error([str(tmp / "base"), str(tmp_path / "nope"), "-o", out], capsys)
    assert "no such directory, and not a Hugging Face Hub id" in err
    # an index naming a shard that is absent
    broken = tmp_path / "broken_rl"
    shutil.copytree(tmp / "rl", broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (broken / victim).unlink()
    err = _cli_error([str(tmp / "base"), str(broken), "-o", out], capsys)
    assert f"shard file {victim}" in err and "is missing" in err and "broken_rl" in err
    # a corrupted file
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tmp / "rl_single", corrupt)
    raw = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 8 + raw[8:])
    err = _cli_error([str(tmp / "base"), str(corrupt), "-o", out], capsys)
    assert "corrupt" in err and "model.safetensors" in err
    # different architectures: tensor names and shapes differ
    other = tmp_path / "wide"
    build_base(other, seed=3, **{**SIZES, "intermediate_size": 96})
    err = _cli_error([str(tmp / "base"), str(other), "-o", out], capsys)
    assert "mlp.down_proj.weight" in err and "'base'" in err and "'wide'" in err
    assert not Path(out).exists() or not (Path(out) / "report.html").exists()
    # an output folder someone else's files are in
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("%")
    err = _cli_error([str(tmp / "base"), str(tmp / "rl"), "-o", str(foreign)], capsys)
    assert "not empty and was not written by `offprincipal compare`" in err


# ------------------------------------------------------------------ the report in a browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_with_its_heatmaps(pair_run, tmp_path):
    from PIL import Image

    out, _, _ = pair_run
    html_text = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html_text), "the report loads something from outside"
    url = (out / "report.html").as_uri()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    heatmaps = re.findall(r'<img class="heatmap"[^>]*src="data:image/png;base64,([^"]+)"', dom.stdout)
    assert len(heatmaps) >= 2  # sparsity, and spectrum/angles per layer × kind
    assert 'data-kind="sparsity"' in dom.stdout and "id=\"summary\"" in dom.stdout
    shot = tmp_path / "shot.png"
    res = subprocess.run([_chromium(), *flags, "--window-size=1280,1400", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stdout[-2000:]
    screen = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert len(np.unique(screen.reshape(-1, 3), axis=0)) > 50, "the screenshot is blank"
    # the sparsity heatmap's own cell colours must appear on screen, in one wide block near the top
    sparsity_png = np.asarray(Image.open(io.BytesIO(base64.b64decode(heatmaps[0]))).convert("RGB")).astype(int)
    import matplotlib

    viridis = (np.array(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256)))[:, :3] * 255).round().astype(int)
    cell = sparsity_png.reshape(-1, 3)
    near = np.min(np.abs(cell[:, None, :] - viridis[None, ::4, :]).sum(-1), axis=1) <= 6
    colours, counts = np.unique(cell[near], axis=0, return_counts=True)
    main = colours[np.argsort(counts)[-3:]]  # the heatmap's three most used cell colours
    hit = np.zeros(screen.shape[:2], bool)
    for c in main:
        hit |= np.abs(screen - c).sum(-1) <= 6
    ys, xs = np.nonzero(hit)
    assert hit.sum() > 2000, f"only {hit.sum()} heatmap-coloured pixels on screen"
    assert ys.max() < 1400 and xs.max() - xs.min() > 400, "the heatmap is not where the report puts it"
