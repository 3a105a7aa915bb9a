"""Training-run artifacts (Figs. 3, 6, 9, 10, 11, 14, 15, Sec. 2.3, Tables 4-5) rendered from
real tiny runs.

The module fixture builds a tiny random Qwen3 with the toy world's character tokenizer
(so the evaluation stage scores it through lm-eval on a real held-out split), an
intervened copy (``build_intervened``: ROTATE+PERMUTE on layer 0, ROTATE on layer 1), and
trains short DAPO runs with ``offprincipal.training.train`` -- dense at three learning rates,
an independent seed, one from the intervened base, principal- and safe-masked, LoRA and
PiSSA at two learning rates -- with a trivial reward (share of digits in the completion).
The workflow's passes then run on every pair (``compare_pair``, ``compute_spectra``,
``pair_geometry``), checkpoint manifests come from ``run_checkpoint``, evaluations from
``offprincipal.evaluation.stage.evaluate_manifest`` (lm-eval's hf backend) and each accuracy
artifact's paired comparisons from ``write_paired_table``, exactly as the workflow's rules do.
"""

from __future__ import annotations

import json
import shutil

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from offprincipal.analysis import compare_pair, compute_spectra, pair_geometry
from offprincipal.artifacts.catalogue import ARTIFACTS, outputs
from offprincipal.artifacts.data.context import ArtifactInputError, TrainingContext
from offprincipal.artifacts.data.intervention import intervened_overlap
from offprincipal.artifacts.figures.rowcol import _checkpoints
from offprincipal.artifacts.inputs import artifact_inputs, evaluation_contrasts
from offprincipal.artifacts.render import handled, render_artifact
from offprincipal.evaluation.results import read_samples
from offprincipal.evaluation.stage import evaluate_manifest, write_paired_table
from offprincipal.interventions import RECORD_FORMAT, map_mask_forward
from offprincipal.io import write_json
from offprincipal.training.masks import load_masks

from bitwise_reference import changed_bitwise  # tests/bitwise_reference.py

pytest.importorskip("trl")

TASK = "add_sub_d1"
SUITE_TASK = f"toy:{TASK}"
SUITE = {"tasks": {SUITE_TASK: {"k": 2}}, "temperature": 1.0, "top_p": 1.0, "max_gen_toks": 4,
         "chat_template": False}
KINDS = ["q", "k", "v", "o", "gate", "up", "down"]
METRICS = dict(eta=1e-3, abs_tolerance=1e-5, angle_ks=[1, 2, 4, 8], report_k=4, principal_rank_k=4, mask_alpha=0.5)
Q1 = "model.layers.1.self_attn.q_proj.weight"
O0 = "model.layers.0.self_attn.o_proj.weight"
DOWN0 = "model.layers.0.mlp.down_proj.weight"
MINE = ("fig3", "fig14", "fig6", "fig9", "fig10", "fig11", "fig15", "sec2_3", "table4", "table5")
FIGURES = [a for a in MINE if ARTIFACTS[a].kind == "figure"]
COMMON = dict(algorithm="dapo", steps=3, prompts_per_step=4, group_size=2, max_response_length=4, lr=1e-4)
#: run id -> (base checkpoint, RunSpec fields besides COMMON)
RUNS = {
    "dense": ("base", dict(save_steps=[1, 2])),
    "indep": ("base", dict(seed=1)),
    "onint": ("int", dict(seed=2)),  # a seed of its own: same seed + same function = same rollouts
    "principal": ("base", dict(mask="principal", mask_rank_k=4, save_steps=[2])),
    "safe": ("base", dict(mask="safe", mask_rank_k=4, save_steps=[2])),
    "lr_small": ("base", dict(lr=1e-5)),
    "lr_large": ("base", dict(lr=1e-3)),
    "lora_a": ("base", dict(adapter="lora", adapter_rank=2, lr=1e-3)),
    "lora_b": ("base", dict(adapter="lora", adapter_rank=2, lr=1e-2)),
    "pissa_a": ("base", dict(adapter="pissa", adapter_rank=2, lr=1e-3)),
    "pissa_b": ("base", dict(adapter="pissa", adapter_rank=2, lr=1e-2)),
}
ADAPTER_PAIRS = ["base__lora_a", "base__lora_b", "base__pissa_a", "base__pissa_b"]


def digit_share(prompts, completions, **_):
    """A trivial reward that varies within a group: the share of digits in the completion."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def _tiny_toy_base(path):
    from transformers import Qwen3ForCausalLM

    from offprincipal.toy.pretrain import make_config
    from offprincipal.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = make_config(tok, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=64)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(path)
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from offprincipal.toy.task import build_datasets
    from offprincipal.toy.world import build_intervened, run_checkpoint, training_rows
    from offprincipal.training import RunSpec, train

    root = tmp_path_factory.mktemp("render_training")
    data, ckpts, man = root / "data", root / "ckpts", root / "checkpoints"
    build_datasets(data, seed=0, tasks=[TASK], train_size=16, test_size=8, pretrain_size=4,
                   pretrain_mixture={TASK: 1.0}, rl_task=TASK)
    _tiny_toy_base(ckpts / "base")
    write_json(man / "base.json", {"name": "base", "source": "toy_base", "path": str(ckpts / "base")})
    build_intervened("int", man / "base.json", ckpts / "int", man / "int.json",
                     interventions=[{"layer": 0, "rotate": True, "permute": True, "seed": 1},
                                    {"layer": 1, "rotate": True, "seed": 2}])
    rows = training_rows(data, TASK, "dapo")
    runs_cfg, pairs = {}, {}
    checkpoints = {"base": {"source": "toy_base"}, "int": {"source": "intervened", "from": "base"}}
    for rid, (base, extra) in RUNS.items():
        spec = RunSpec(**{**COMMON, **extra})
        train(spec, ckpts / base, root / "runs" / rid, train_data=rows, reward_fn=digit_share, threads=1)
        runs_cfg[rid] = {"base": base, "task": TASK, "spec": spec.to_dict(), "label": rid}
        for step in [*spec.save_steps, "final"]:
            ck = f"{rid}_{'final' if step == 'final' else f's{step}'}"
            run_checkpoint(ck, root / "runs" / rid, step, man / f"{ck}.json")
            checkpoints[ck] = {"source": "run", "run": rid, "step": step}
            pid = f"{base}__{ck}"
            pairs[pid] = dict(base=base, finetuned=ck, kind="rl", algorithm="DAPO", data=TASK,
                              label=f"{rid} ({'final' if step == 'final' else f'step {step}'})", run=rid)
    for pid, p in pairs.items():
        d = root / "pairs" / pid
        compare_pair(man / f"{p['base']}.json", man / f"{p['finetuned']}.json", updates_csv=d / "updates.csv",
                     masks_npz=d / "masks.npz", device="cpu")
    for ck in ["base", "lora_a_final", "lora_b_final", "pissa_a_final", "pissa_b_final"]:
        compute_spectra(man / f"{ck}.json", root / "spectra" / f"{ck}.safetensors", kinds=KINDS, top_k=8, device="cpu")
    for a in ("lora_a", "lora_b", "pissa_a", "pissa_b"):
        d = root / "pairs" / f"base__{a}_final"
        pair_geometry(man / "base.json", man / f"{a}_final.json", root / "spectra" / "base.safetensors",
                      root / "spectra" / f"{a}_final.safetensors", d / "masks.npz", geometry_csv=d / "geometry.csv",
                      angles_csv=d / "angles.csv", angle_ks=METRICS["angle_ks"], report_k=4, principal_rank_k=4,
                      mask_alpha=0.5, device="cpu")
    for ck in ["base", "int", *(p["finetuned"] for p in pairs.values())]:
        evaluate_manifest(man / f"{ck}.json", suite=SUITE, backend="hf", backend_args={"batch_size": 64},
                          result_path=root / "eval" / "toy" / f"{ck}.json",
                          samples_path=root / "eval" / "toy" / f"{ck}.samples.jsonl.gz", datasets_dir=data)
    masks = ["base__dense_final", "base__principal_final", "base__safe_final"]
    contrasts = [["pissa_a_final", "lora_a_final"], ["pissa_b_final", "lora_b_final"]]
    specs = {
        "fig3": {"pairs": ["base__dense_s1", "base__dense_s2", "base__dense_final"], "tensors": [Q1]},
        "fig14": {"pairs": ["base__dense_s2", "base__dense_s1", "base__dense_final"], "tensors": [O0, DOWN0, Q1]},
        "fig6": {"pairs": ["base__dense_final", "base__indep_final", "int__onint_final"]},
        "fig9": {"pairs": masks, "suite": "toy", "reference": "base__dense_final"},
        "fig15": {"pairs": ["base__dense_final", "base__indep_final", "base__lr_large_final"]},
        "fig10": {"pairs": [f"{p}_final" for p in ADAPTER_PAIRS], "suite": "toy", "contrasts": contrasts},
        "fig11": {"pairs": [f"{p}_final" for p in ADAPTER_PAIRS], "suite": "toy", "contrasts": contrasts},
        "sec2_3": {"pairs": ["base__lr_small_final", "base__dense_final", "base__lr_large_final"]},
        "table4": {"pairs": masks, "suite": "toy", "reference": "base__dense_final"},
        "table5": {"pairs": ["base__dense_s2", "base__principal_s2", "base__safe_s2"], "suite": "toy",
                   "reference": "base__dense_s2"},
    }
    for name, spec in specs.items():
        if "suite" in spec:
            cons = evaluation_contrasts(spec, pairs)
            files = {c: root / "eval" / "toy" / f"{c}.json" for con in cons for c in con}
            write_paired_table(cons, files, root / "eval" / "paired" / f"{name}.csv", n_boot=2000)
    return {"root": root, "ckpts": ckpts, "pairs": pairs, "checkpoints": checkpoints, "runs": runs_cfg, "specs": specs}


def independent_accuracy(world, ckpt) -> np.ndarray:
    """Per-problem pass@1 recomputed from the samples file with the toy verifier (not the result file)."""
    from offprincipal.toy.task import is_correct

    lines = sorted(read_samples(world["root"] / "eval" / "toy" / f"{ckpt}.samples.jsonl.gz"),
                   key=lambda line: line["problem_id"])
    return np.array([np.mean([is_correct(line["prompt"], r) for r in line["responses"]]) for line in lines])


def inputs_for(world, name, pids=None):
    """The workflow's inputs of ``name`` (over ``pids`` if given), with the fixture's root as the results folder."""
    spec = {**world["specs"][name], "pairs": pids} if pids else world["specs"][name]
    return artifact_inputs(name, spec, pairs=world["pairs"], checkpoints=world["checkpoints"], results=world["root"])


def render(world, name, out_dir, inputs=None, spec=None):
    spec = spec or world["specs"][name]
    outs = [str(out_dir / f"{name}.{ext}") for ext in outputs(name)]
    runs = {world["pairs"][p]["run"]: world["runs"][world["pairs"][p]["run"]] for p in spec["pairs"]}
    render_artifact(name, inputs or inputs_for(world, name, spec["pairs"]), outs, spec=spec,
                    pairs={p: world["pairs"][p] for p in spec["pairs"]}, runs=runs, synthetic=False,
                    config_name="test", metrics=METRICS)
    return outs


def test_training_artifacts_are_handled():
    assert set(MINE) <= set(handled())


@pytest.mark.parametrize("name", FIGURES)
def test_every_training_figure_renders_pdf_and_png(world, tmp_path, name):
    pdf, png = render(world, name, tmp_path)
    with open(pdf, "rb") as fh:
        assert fh.read(5) == b"%PDF-"
    h, w = mpimg.imread(png).shape[:2]
    assert 3 * 150 <= w <= 16 * 150 and 2.5 * 150 <= h <= 16 * 150
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{name}.pdf", f"{name}.png"])


def test_table4_numbers_come_from_the_checkpoints_masks_and_evaluations(world, tmp_path):
    csv, md = render(world, "table4", tmp_path)
    table = pd.read_csv(csv)
    assert list(table["row"]) == ["base", "run", "run", "run"]
    col = f"acc_{SUITE_TASK}"
    assert table.loc[0, "checkpoint"] == "base"
    assert table.loc[0, col] == pytest.approx(independent_accuracy(world, "base").mean(), abs=1e-12)
    dense = independent_accuracy(world, "dense_final")
    w0 = load_file(str(world["ckpts"] / "base" / "model.safetensors"))
    runs = world["root"] / "runs"
    for _, row in table.iloc[1:].iterrows():
        w1 = load_file(str(runs / row["run"] / "final" / "model.safetensors"))
        total = sum(t.numel() for t in w0.values())
        changed = sum(changed_bitwise(w0[n], w1[n]) for n in w0)
        assert row["numel"] == total and row["changed_eta"] == changed
        assert row["update_sparsity_pct"] == pytest.approx(100 * (1 - changed / total), abs=1e-9)
        mine = independent_accuracy(world, row["checkpoint"])
        assert row[col] == pytest.approx(mine.mean(), abs=1e-12)
        assert row[col + "_lo"] <= row[col] <= row[col + "_hi"]
        assert row[f"delta_base_{SUITE_TASK}"] == pytest.approx(
            mine.mean() - independent_accuracy(world, "base").mean(), abs=1e-12)
        if row["checkpoint"] == "dense_final":
            assert pd.isna(row[f"delta_ref_{SUITE_TASK}"])
        else:
            assert row[f"delta_ref_{SUITE_TASK}"] == pytest.approx(mine.mean() - dense.mean(), abs=1e-12)
        assert row["step"] == 3
        if row["mask"] == "none":
            assert row["trainable_share"] == 1.0
            assert row["trainable_params"] == sum(
                t.numel() for n, t in w0.items() if any(f".{p}_proj." in n for p in KINDS))
        else:
            masks = load_masks(runs / row["run"] / "masks.npz")
            share = sum(int(t.sum()) for t in masks.values()) / sum(t.numel() for t in masks.values())
            assert row["trainable_share"] == pytest.approx(share)
            assert row["trainable_params"] == sum(int(t.sum()) for t in masks.values())
            assert 0 < share < 1
            # frozen entries are bitwise unchanged, so every change lies inside the mask
            assert row["changed_eta"] <= sum(int(t.sum()) for t in masks.values())
    assert list(table["mask"].iloc[1:]) == ["none", "principal", "safe"]
    text = open(md).read()
    assert " (all) " in text and f"{table.loc[1, 'update_sparsity_pct']:.2f}" in text


def test_table5_is_at_the_intermediate_step(world, tmp_path):
    csv, _ = render(world, "table5", tmp_path)
    table = pd.read_csv(csv)
    assert list(table["step"].iloc[1:]) == [2, 2, 2]
    for _, row in table.iloc[1:].iterrows():
        assert row["checkpoint"].endswith("_s2")
        assert row[f"acc_{SUITE_TASK}"] == pytest.approx(independent_accuracy(world, row["checkpoint"]).mean(), abs=1e-12)


def test_table4_places_each_evaluation_in_its_row(world, tmp_path):
    """Distinct planted per-problem accuracies (the tiny random model scores ~0 everywhere) land
    in the row of their checkpoint, with the paired differences to the dense run and the base."""
    spec = world["specs"]["table4"]
    inputs = inputs_for(world, "table4")
    planted, files = {}, {}
    rng = np.random.default_rng(0)
    for key in ("base_eval", "ft_eval"):
        new = []
        for path in inputs[key]:
            result = json.loads(open(path).read())
            ckpt = result["checkpoint"]["id"]
            score = result["tasks"][SUITE_TASK]["scores"]["toy_verifier"]
            if ckpt not in planted:
                planted[ckpt] = rng.choice([0.0, 0.5, 1.0], size=len(score["per_problem"]))
            score["per_problem"] = planted[ckpt].tolist()
            score["per_response"] = [{0.0: [0, 0], 0.5: [1, 0], 1.0: [1, 1]}[v] for v in planted[ckpt]]  # k = 2
            score["avg_at_k"] = float(planted[ckpt].mean())
            score["ci95"] = [0.0, 1.0]
            out = tmp_path / "in" / f"{ckpt}.json"
            write_json(out, result)
            new.append(str(out))
            files[ckpt] = out
        inputs[key] = new
    cons = evaluation_contrasts(spec, world["pairs"])
    paired = tmp_path / "in" / "paired.csv"
    write_paired_table(cons, files, paired, n_boot=500)
    inputs["paired"] = [str(paired)]
    csv, md = render(world, "table4", tmp_path / "out", inputs=inputs)
    table = pd.read_csv(csv)
    col = f"acc_{SUITE_TASK}"
    for _, row in table.iterrows():
        assert row[col] == pytest.approx(planted[row["checkpoint"]].mean())
    for _, row in table.iloc[1:].iterrows():
        c = row["checkpoint"]
        assert row[f"delta_base_{SUITE_TASK}"] == pytest.approx(planted[c].mean() - planted["base"].mean())
        if c != "dense_final":
            assert row[f"delta_ref_{SUITE_TASK}"] == pytest.approx(planted[c].mean() - planted["dense_final"].mean())
    first = table.iloc[1]
    assert f"{100 * first[col]:.1f} [" in open(md).read()  # shown as a percentage with its interval


def test_evaluation_of_another_checkpoint_is_refused(world, tmp_path):
    inputs = inputs_for(world, "fig9")
    inputs["ft_eval"] = inputs["ft_eval"][::-1]
    with pytest.raises(ArtifactInputError, match=r"fig9: input file .*safe_final\.json .*is of checkpoint 'safe_final', "
                                                 r"the pair's checkpoint is 'dense_final'"):
        render(world, "fig9", tmp_path, inputs=inputs)
    assert not list(tmp_path.iterdir())


def _ctx(world, name, pids):
    return TrainingContext(name=name, inputs=inputs_for(world, name, pids), spec={"pairs": pids, "tensors": [Q1]},
                           pairs={p: world["pairs"][p] for p in pids}, synthetic=False, config_name="t",
                           runs={"dense": world["runs"]["dense"]})


def test_row_col_steps_come_from_the_manifests_in_training_order(world):
    ck = _checkpoints(_ctx(world, "fig14", world["specs"]["fig14"]["pairs"]))
    assert [(p, s) for p, s, _ in ck] == [("base__dense_s1", 1), ("base__dense_s2", 2), ("base__dense_final", 3)]
    with pytest.raises(ArtifactInputError, match="several runs"):
        _checkpoints(_ctx(world, "fig3", ["base__dense_s1", "base__safe_s2"]))


def _record(layers):
    geo = dict(num_layers=3, hidden_size=16, num_attention_heads=4, num_key_value_heads=2, head_dim=4)
    return {"format": RECORD_FORMAT, "geometry": geo, "layers": layers}


def test_intervened_overlap_on_planted_masks():
    """Layer 0 permuted (q/k/v rows, o columns): C is A moved into the intervened
    coordinates, so mapping back recovers Jaccard 1, while comparing as stored does not.
    Layer 1 rotated: v and o are compared as stored. Layer 2 untouched."""
    rng = np.random.default_rng(0)
    rec = _record([
        {"layer": 0, "permute": True, "rotate": False, "kv_perm": [1, 0], "q_perm": [2, 3, 0, 1]},
        {"layer": 1, "permute": False, "rotate": True},
    ])
    shapes = {"q": (16, 16), "k": (8, 16), "v": (8, 16), "o": (16, 16), "gate": (24, 16), "up": (24, 16), "down": (16, 24)}

    def name(layer, kind):
        mod = "self_attn" if kind in "qkvo" else "mlp"
        return f"model.layers.{layer}.{mod}.{kind}_proj.weight"

    a, b, c = {}, {}, {}
    for layer in range(3):
        for kind, shape in shapes.items():
            n = name(layer, kind)
            a[n] = rng.random(shape) < 0.3
            b[n] = a[n].copy()
            if layer == 1 and kind in ("v", "o"):
                c[n] = np.zeros(shape, dtype=bool)
                c[n].reshape(-1)[: a[n].size // 2] = True  # a fixed half, unrelated to A
            else:
                c[n] = map_mask_forward(a[n], n, rec)
    # B differs from A in exactly one half of layer 2's MLP: drop every update of the lower rows
    for kind in ("gate", "up"):
        b[name(2, kind)][12:] = False
    t = intervened_overlap(a, b, c, rec).set_index(["layer", "group"])
    assert len(t) == 6
    for layer in range(3):
        for group in ("attention", "mlp"):
            assert t.loc[(layer, group), "jaccard_ac"] == pytest.approx(1.0) or (layer, group) == (1, "attention")
    assert t.loc[(0, "attention"), "n_mapped_back"] == 4 and t.loc[(0, "attention"), "intervention"] == "permute"
    assert t.loc[(1, "attention"), "n_rotated"] == 2 and t.loc[(1, "attention"), "intervention"] == "rotate"
    assert not t.loc[(2, "mlp"), "intervened"] and t.loc[(2, "mlp"), "intervention"] == ""
    # layer 1 attention: q, k identical; v, o against the planted half
    inter = union = 0
    for kind in ("q", "k", "v", "o"):
        n = name(1, kind)
        inter += int((a[n] & c[n]).sum())
        union += int((a[n] | c[n]).sum())
    assert t.loc[(1, "attention"), "jaccard_ac"] == pytest.approx(inter / union)
    assert inter / union < 0.9
    # A vs B: 1 everywhere except layer 2's MLP
    gate, up, down = (name(2, k) for k in ("gate", "up", "down"))
    kept = sum(int(b[n].sum()) for n in (gate, up, down))
    assert t.loc[(2, "mlp"), "jaccard_ab"] == pytest.approx(kept / sum(int(a[n].sum()) for n in (gate, up, down)))
    assert (t.drop(index=(2, "mlp"))["jaccard_ab"] == 1.0).all()
    # Bernoulli baseline of identical densities p: p / (2 - p), pooled over the tensors
    n_all = sum(a[name(0, k)].size for k in "qkvo")
    exp_i = sum(a[name(0, k)].size * a[name(0, k)].mean() ** 2 for k in "qkvo")
    exp_u = sum(a[name(0, k)].size * (2 * a[name(0, k)].mean() - a[name(0, k)].mean() ** 2) for k in "qkvo")
    assert n_all > 0 and t.loc[(0, "attention"), "baseline_ac"] == pytest.approx(exp_i / exp_u)
    # without mapping back, the permuted layer would look scrambled
    as_stored = sum(int((a[name(0, k)] & c[name(0, k)]).sum()) for k in "qk") / sum(
        int((a[name(0, k)] | c[name(0, k)]).sum()) for k in "qk")
    assert as_stored < 0.6


def test_fig6_on_real_runs_maps_permuted_and_keeps_rotated(world):
    from offprincipal.interventions import load_record
    from offprincipal.metrics.masks import MaskFile

    root = world["root"]
    rec = load_record(world["ckpts"] / "int")
    files = [MaskFile(root / "pairs" / p / "masks.npz") for p in world["specs"]["fig6"]["pairs"]]
    try:
        t = intervened_overlap(*files, rec).set_index(["layer", "group"])
    finally:
        for f in files:
            f.close()
    assert t.loc[(0, "attention"), "intervention"] == "rotate+permute"
    assert t.loc[(0, "attention"), "n_mapped_back"] == 2 and t.loc[(0, "attention"), "n_rotated"] == 2
    assert t.loc[(1, "attention"), "intervention"] == "rotate" and t.loc[(1, "attention"), "n_mapped_back"] == 0
    assert t[["jaccard_ab", "jaccard_ac", "baseline_ab", "baseline_ac"]].notna().all().all()


@pytest.mark.parametrize("name,key", [("fig9", "runs"), ("fig15", "metrics"), ("table4", "ft_eval"),
                                      ("fig6", "masks"), ("fig3", "ft_manifests"), ("fig11", "geometry"),
                                      ("table5", "masks_npz"), ("fig6", "record")])
def test_missing_input_names_the_file_and_leaves_no_output(world, tmp_path, name, key):
    inputs = inputs_for(world, name)
    if key == "metrics":  # a run directory without its training log
        broken = tmp_path / "in" / "lr_large"
        shutil.copytree(inputs["runs"][-1], broken)
        (broken / "metrics.jsonl").unlink()
        inputs["runs"][-1] = str(broken)
        missing = str(broken / "metrics.jsonl")
    elif key == "masks_npz":  # a masked run that lost its trainable-entry masks
        broken = tmp_path / "in" / "safe"
        shutil.copytree(inputs["runs"][-1], broken, ignore=shutil.ignore_patterns("step_*", "final"))
        (broken / "masks.npz").unlink()
        inputs["runs"][-1] = str(broken)
        missing = str(broken / "masks.npz")
    elif key == "record":  # the intervened base's manifest names a record that is gone
        m = json.loads(open(inputs["base_manifests"][2]).read())
        missing = str(tmp_path / "in" / "gone" / "intervention.json")
        m["intervention_record"] = missing
        write_json(tmp_path / "in" / "int.json", m)
        inputs["base_manifests"][2] = str(tmp_path / "in" / "int.json")
    else:
        missing = str(tmp_path / "nowhere" / "gone.file")
        inputs[key] = [*inputs[key][:-1], missing]
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / f"{name}.{outputs(name)[0]}"
    stale.write_text("stale output of an earlier run")
    with pytest.raises(ArtifactInputError) as err:
        render(world, name, tmp_path / "out", inputs=inputs)
    assert name in str(err.value) and missing in str(err.value)
    assert not any((tmp_path / "out").iterdir())


def test_sec2_3_sparsity_falls_with_the_learning_rate(world, tmp_path):
    """Not a figure check but the fixture's premise: larger steps realize more bf16 updates."""
    tables = [pd.read_csv(world["root"] / "pairs" / p / "updates.csv") for p in world["specs"]["sec2_3"]["pairs"]]
    sp = [1 - t["changed_eta"].sum() / t["numel"].sum() for t in tables]
    assert sp[0] > sp[1] > sp[2]
