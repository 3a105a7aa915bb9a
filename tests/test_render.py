"""Artifact renderers on inputs produced by the real package passes over tiny synthetic pairs.

The module fixture builds a tiny synthetic base, an SFT stand-in and three RL stand-ins,
then runs compare_pair, compute_spectra, pair_geometry and cross_run_jaccard exactly as the
workflow's rules do. Numbers in the tables are checked against quantities recomputed here
straight from the safetensors files.
"""

from __future__ import annotations

import itertools
import math

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from offprincipal.analysis import compare_pair, compute_spectra, cross_run_jaccard, pair_geometry
from offprincipal.artifacts.catalogue import ARTIFACTS, CHECKPOINT_ONLY, outputs
from offprincipal.artifacts.data.context import ArtifactInputError
from offprincipal.artifacts.data.overlap import pooled_overlap
from offprincipal.artifacts.inputs import artifact_inputs
from offprincipal.artifacts.render import handled, render_artifact
from offprincipal.checkpoints.synthetic import build_base, build_variant
from offprincipal.io import write_json

from bitwise_reference import changed_bitwise  # tests/bitwise_reference.py

SIZES = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=64)
KINDS = ["q", "k", "v", "o", "gate", "up", "down"]
METRICS = dict(eta=1e-3, abs_tolerance=1e-5, angle_ks=[1, 2, 4, 8], report_k=4, principal_rank_k=4, mask_alpha=0.5)
RL_PAIRS = ["base__rl1", "base__rl2", "base__rl3"]
Q1 = "model.layers.1.self_attn.q_proj.weight"
DOWN0 = "model.layers.0.mlp.down_proj.weight"
FIGURES = sorted(a for a in handled() if ARTIFACTS[a].kind == "figure" and a in CHECKPOINT_ONLY)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    ckpts = root / "ckpts"
    build_base(ckpts / "base", seed=1, **SIZES)
    build_variant(ckpts / "base", ckpts / "sft", kind="dense", seed=2, scale=1.0)
    for i in (1, 2, 3):
        build_variant(ckpts / "base", ckpts / f"rl{i}", kind="offprincipal", seed=10 + i, scale=1.0, shared_seed=7)
    names = ["base", "sft", "rl1", "rl2", "rl3"]
    for n in names:
        write_json(root / "manifests" / f"{n}.json", {"name": n, "path": str(ckpts / n)})
        compute_spectra(root / "manifests" / f"{n}.json", root / "spectra" / f"{n}.safetensors",
                        kinds=KINDS, top_k=16, device="cpu")
    pairs = {
        "base__sft": dict(base="base", finetuned="sft", label="base → dense (SFT stand-in)", kind="sft",
                          algorithm="SFT", data="none", paper_sparsity=2.8),
        **{
            f"base__rl{i}": dict(base="base", finetuned=f"rl{i}", label=f"base → off-principal {i} (RL stand-in)",
                                 kind="rl", algorithm="RL", data="none")
            for i in (1, 2, 3)
        },
    }
    for pid, p in pairs.items():
        d = root / "pairs" / pid
        m0, m1 = root / "manifests" / f"{p['base']}.json", root / "manifests" / f"{p['finetuned']}.json"
        compare_pair(m0, m1, updates_csv=d / "updates.csv", masks_npz=d / "masks.npz", device="cpu")
        pair_geometry(m0, m1, root / "spectra" / f"{p['base']}.safetensors",
                      root / "spectra" / f"{p['finetuned']}.safetensors", d / "masks.npz",
                      geometry_csv=d / "geometry.csv", angles_csv=d / "angles.csv", angle_ks=METRICS["angle_ks"],
                      report_k=4, principal_rank_k=4, mask_alpha=0.5, device="cpu")
    masks = {p: root / "pairs" / p / "masks.npz" for p in RL_PAIRS}
    cross_run_jaccard(masks, root / "crossrun" / "table2.csv", layer=1, kinds=KINDS)
    cross_run_jaccard(masks, root / "crossrun" / "fig12.csv", kinds=KINDS)
    specs = {
        "table1": {"pairs": list(pairs)},
        "table2": {"pairs": RL_PAIRS, "layer": 1},
        "fig1c": {"pairs": ["base__sft", "base__rl1"]},
        "fig2": {"pairs": RL_PAIRS, "tensors": [Q1, DOWN0]},
        "fig4": {"pairs": ["base__sft", "base__rl1"], "tensors": [Q1]},
        "fig5": {"pairs": ["base__rl1", "base__rl2"]},
        "fig7": {"pairs": ["base__sft", "base__rl1", "base__rl2"]},
        "fig8": {"pairs": ["base__rl2", "base__rl3"]},
        "fig12": {"pairs": RL_PAIRS},
        "fig13": {"pairs": ["base__rl3", "base__rl1"]},
        "fig16": {"pairs": ["base__sft", "base__rl2"], "tensors": [DOWN0]},
        "fig17": {"pairs": ["base__rl3", "base__sft"], "tensors": ["model.layers.0.self_attn.o_proj.weight"]},
        "fig18": {"pairs": ["base__rl1", "base__sft"]},
    }
    checkpoints = {n: {"source": "synthetic"} for n in names}
    return {"root": root, "ckpts": ckpts, "pairs": pairs, "checkpoints": checkpoints, "specs": specs}


def inputs_for(world, name):
    """The workflow's inputs of ``name``, with the fixture's root as the results folder."""
    return artifact_inputs(name, world["specs"][name], pairs=world["pairs"], checkpoints=world["checkpoints"],
                           results=world["root"])


def render(world, name, out_dir, inputs=None, spec=None):
    spec = spec or world["specs"][name]
    outs = [str(out_dir / f"{name}.{ext}") for ext in outputs(name)]
    render_artifact(
        name, inputs or inputs_for(world, name), outs, spec=spec,
        pairs={p: world["pairs"][p] for p in spec["pairs"]}, synthetic=True, config_name="test", metrics=METRICS,
    )
    return outs


def test_every_artifact_of_the_catalogue_is_handled():
    assert sorted(ARTIFACTS) == handled()


def test_table1_sparsity_equals_bitwise_count_from_the_checkpoints(world, tmp_path):
    csv, md = render(world, "table1", tmp_path)
    table = pd.read_csv(csv).set_index("pair")
    for pid, pair in world["pairs"].items():
        w0 = load_file(str(world["ckpts"] / pair["base"] / "model.safetensors"))
        w1 = load_file(str(world["ckpts"] / pair["finetuned"] / "model.safetensors"))
        assert set(w0) == set(w1)
        total = sum(t.numel() for t in w0.values())
        changed = sum(changed_bitwise(w0[n], w1[n]) for n in w0)
        changed_abs = sum(int(((w1[n].float() - w0[n].float()).abs() > 1e-5).sum()) for n in w0)
        row = table.loc[pid]
        assert row["numel"] == total
        assert row["sparsity_eta_pct"] == pytest.approx(100 * (1 - changed / total), abs=1e-9)
        assert row["sparsity_abs_pct"] == pytest.approx(100 * (1 - changed_abs / total), abs=1e-9)
        assert row["abs_minus_eta_pct"] == pytest.approx(row["sparsity_abs_pct"] - row["sparsity_eta_pct"])
        assert row["stored_dtypes"] == "bfloat16 → bfloat16"
    assert table.loc["base__sft", "paper_sparsity_pct"] == 2.8
    assert math.isnan(table.loc["base__rl1", "paper_sparsity_pct"])
    # the planted contrast: the SFT stand-in changes nearly everything, the RL stand-ins far less
    assert table.loc["base__sft", "sparsity_eta_pct"] < 5 < 40 < table.loc["base__rl1", "sparsity_eta_pct"]
    text = open(md).read()
    assert f"{table.loc['base__rl1', 'sparsity_eta_pct']:.2f}" in text
    assert f"{table.loc['base__rl1', 'sparsity_eta_pct']:.6f}" not in text
    assert all(line.count("|") == text.splitlines()[0].count("|") for line in text.splitlines())


def test_table2_mean_row_is_the_mean_of_the_pairwise_rows(world, tmp_path):
    csv, md = render(world, "table2", tmp_path)
    table = pd.read_csv(csv)
    pairwise, mean = table.iloc[:-1], table.iloc[-1]
    assert len(pairwise) == 3 and mean["run_a"] == "mean off-diagonal"
    for col in ("jaccard_pooled", "baseline_pooled", "jaccard_mean", "baseline_mean"):
        assert mean[col] == pytest.approx(pairwise[col].mean(), rel=1e-12)
    assert (table["layer"] == 1).all()
    # pooled Jaccard recomputed from the checkpoints over layer 1's matrices
    w0 = load_file(str(world["ckpts"] / "base" / "model.safetensors"))
    runs = {p: load_file(str(world["ckpts"] / world["pairs"][p]["finetuned"] / "model.safetensors")) for p in RL_PAIRS}
    layer1 = [n for n in w0 if n.startswith("model.layers.1.") and n.endswith("_proj.weight")]
    for (a, b), row in zip(itertools.combinations(RL_PAIRS, 2), pairwise.itertuples()):
        assert (row.run_a, row.run_b) == (a, b)
        inter = union = 0
        for n in layer1:
            ma = (w0[n].view(torch.int16) != runs[a][n].view(torch.int16)).numpy()
            mb = (w0[n].view(torch.int16) != runs[b][n].view(torch.int16)).numpy()
            inter += int((ma & mb).sum())
            union += int((ma | mb).sum())
        assert row.jaccard_pooled == pytest.approx(inter / union)
    assert "mean off-diagonal" in open(md).read()


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_renders_pdf_and_png(world, tmp_path, name):
    pdf, png = render(world, name, tmp_path)
    with open(pdf, "rb") as fh:
        assert fh.read(5) == b"%PDF-"
    img = mpimg.imread(png)
    h, w = img.shape[:2]
    # figures are a few inches wide and tall at 150 dpi
    assert 3 * 150 <= w <= 16 * 150 and 2.5 * 150 <= h <= 16 * 150
    from PIL import Image

    with Image.open(png) as im:
        assert im.info["dpi"] == pytest.approx((150, 150), abs=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{name}.pdf", f"{name}.png"])


def test_figure_output_is_deterministic(world, tmp_path):
    a = render(world, "fig5", tmp_path / "a")
    b = render(world, "fig5", tmp_path / "b")
    for x, y in zip(a, b):
        assert open(x, "rb").read() == open(y, "rb").read()


@pytest.mark.parametrize("name,key", [("fig5", "geometry"), ("table1", "updates"), ("fig4", "ft_spectra"),
                                      ("fig2", "masks"), ("fig12", "jaccard")])
def test_missing_input_names_the_file_and_leaves_no_output(world, tmp_path, name, key):
    inputs = inputs_for(world, name)
    missing = str(tmp_path / "nowhere" / "gone.file")
    inputs[key] = [*inputs[key][:-1], missing]
    stale = tmp_path / f"{name}.{outputs(name)[0]}"
    stale.write_text("stale output of an earlier run")
    with pytest.raises(ArtifactInputError) as err:
        render(world, name, tmp_path, inputs=inputs)
    assert name in str(err.value) and missing in str(err.value)
    assert not any(p.is_file() for p in tmp_path.iterdir())


def test_missing_tensor_or_column_is_named(world, tmp_path):
    spec = {**world["specs"]["fig4"], "tensors": ["model.layers.9.self_attn.q_proj.weight"]}
    with pytest.raises(ArtifactInputError, match=r"fig4: .*no entry 'model\.layers\.9\.self_attn\.q_proj\.weight::S'"):
        render(world, "fig4", tmp_path, spec=spec)
    geo = pd.read_csv(world["root"] / "pairs" / "base__rl1" / "geometry.csv").drop(columns=["overlap_low"])
    broken = tmp_path / "in" / "geometry.csv"
    broken.parent.mkdir()
    geo.to_csv(broken, index=False)
    inputs = inputs_for(world, "fig5")
    inputs["geometry"][0] = str(broken)
    with pytest.raises(ArtifactInputError, match=r"fig5: input file .*geometry\.csv .*lacks column\(s\) \['overlap_low'\]"):
        render(world, "fig5", tmp_path, inputs=inputs)
    assert not list(tmp_path.glob("fig*"))


def test_unknown_artifact_is_a_value_error(world, tmp_path):
    with pytest.raises(ValueError, match="fig99"):
        render_artifact("fig99", {}, [str(tmp_path / "x.pdf"), str(tmp_path / "x.png")], spec={"pairs": []},
                        pairs={}, synthetic=True, config_name="test", metrics={})


def test_pooled_overlap_weights_matrices_by_updated_entries():
    # two matrices: 10 updated entries of which 8 in the mask; 990 updated of which 99 in the mask
    df = pd.DataFrame({"numel": [100, 1000], "update_density": [0.1, 0.99],
                       "overlap_princ": [0.8, 0.1], "density_princ": [0.5, 0.25]})
    ov, base = pooled_overlap(df, "princ")
    assert ov == pytest.approx((8 + 99) / (10 + 990))
    assert base == pytest.approx((0.5 * 10 + 0.25 * 990) / 1000)
    assert np.isfinite(ov)
