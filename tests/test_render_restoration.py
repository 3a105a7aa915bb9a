"""Renderers of the UV-restoration family on constructed inputs: evaluation results built from
known 0/1 outcomes, paired tables by the evaluation stage's own ``write_paired_table``,
manifests and rotation tables written here. Numbers are checked against numpy computations
of the same outcomes; each figure is rendered to PDF and PNG through ``render_artifact``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offprincipal.artifacts.catalogue import ARTIFACTS, OOD_ARTIFACTS
from offprincipal.artifacts.data.context import ArtifactInputError, TrainingContext
from offprincipal.artifacts.data.restoration import restoration_rows, rotation_curves, sft_then_rl_rows
from offprincipal.artifacts.inputs import artifact_inputs, evaluation_contrasts
from offprincipal.artifacts.render import handled, render_artifact
from offprincipal.evaluation.results import SCHEMA, score_summary, write_result
from offprincipal.evaluation.stage import write_paired_table
from offprincipal.io import write_json

ID_TASKS = ("toy:mul_mix_d3",)
OOD_TASKS = ("toy:add_sub_d3", "toy:mod_chain_d2")
N, K = 60, 4


def _outcomes(p: float, seed: int, n: int = N) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return (rng.random((n, K)) < p).astype(int).tolist()


def _result(ckpt: str, tasks: dict[str, list[list[int]]]) -> dict:
    recs = {}
    for task, correct in tasks.items():
        n = len(correct)
        recs[task] = {"k": K, "n_problems": n, "n_samples": n * K,
                      "sampling": {"temperature": 1.0, "top_p": 1.0, "max_gen_toks": 24},
                      "data": {}, "problem_ids": [f"{task}-{i}" for i in range(n)], "primary": "toy_verifier",
                      "scores": {"toy_verifier": score_summary("toy_verifier", correct, K)}, "truncation_rate": 0.0}
    return {"schema": SCHEMA, "checkpoint": {"id": ckpt}, "suite": {}, "backend": {"name": "hf"}, "versions": {},
            "tasks": recs}


class World:
    """Files under ``root`` laid out as the workflow's results folder."""

    def __init__(self, root, config):
        self.root, self.config = root, config
        self.outcomes: dict[tuple[str, str, str], list[list[int]]] = {}

    def evaluate(self, ckpt: str, p_id: float, p_ood: tuple[float, float], seed: int):
        for suite, tasks, ps in (("id", ID_TASKS, (p_id,)), ("ood", OOD_TASKS, p_ood)):
            outs = {t: _outcomes(p, seed * 10 + j + (0 if suite == "id" else 5)) for j, (t, p) in enumerate(zip(tasks, ps))}
            for t, o in outs.items():
                self.outcomes[suite, ckpt, t] = o
            write_result(self.root / "eval" / suite / f"{ckpt}.json", _result(ckpt, outs))

    def mean(self, suite, ckpt):
        tasks = ID_TASKS if suite == "id" else OOD_TASKS
        return float(np.mean([np.mean(self.outcomes[suite, ckpt, t]) for t in tasks]))

    def render(self, name, tmp_path, runs=None):
        spec = self.config["artifacts"][name]
        pairs = {p: self.config["pairs"][p] for p in spec["pairs"]}
        inputs = artifact_inputs(name, spec, pairs=self.config["pairs"], checkpoints=self.config["checkpoints"],
                                 results=str(self.root))
        contrasts = evaluation_contrasts(spec, self.config["pairs"])
        ckpts = dict.fromkeys(c for ab in contrasts for c in ab)
        for suite, out in (("id", inputs["paired"][0]), ("ood", inputs["paired_ood"][0])):
            write_paired_table(contrasts, {c: self.root / "eval" / suite / f"{c}.json" for c in ckpts}, out, n_boot=2000)
        ctx = TrainingContext(name=name, inputs=inputs, spec=spec, pairs=pairs, synthetic=False, config_name="test",
                              metrics={"rotation_window": 4}, runs=runs or {})
        exts = ("pdf", "png") if ARTIFACTS[name].kind == "figure" else ("csv", "md")
        outputs = [str(tmp_path / f"{name}.{e}") for e in exts]
        render_artifact(name, inputs, outputs, spec=spec, pairs=pairs, synthetic=False, config_name="test",
                        metrics={"rotation_window": 4}, runs=runs or {})
        for out in outputs:
            assert (tmp_path / out).stat().st_size > (1000 if ARTIFACTS[name].kind == "figure" else 100)
        return ctx


def _manifest(root, ckpt, **fields):
    write_json(root / "checkpoints" / f"{ckpt}.json", {"name": ckpt, "path": f"/nowhere/{ckpt}", **fields})


RESTORED = {"top5": 0.05, "top20": 0.2, "top100": 1.0}
GROUPS = ("last", "first", "middle")  # listed out of order: the figure sorts them


@pytest.fixture
def restoration_world(tmp_path):
    root = tmp_path / "results"
    checkpoints = {"base": {"source": "toy_base"}, "sft": {"source": "run", "run": "sft", "step": "final"}}
    pairs = {"sft": {"base": "base", "finetuned": "sft", "kind": "sft", "label": "SFT"}}
    _manifest(root, "base", source="toy_base")
    _manifest(root, "sft", source="run", run="sft", step="final")
    for key, p in RESTORED.items():
        checkpoints[f"r_{key}"] = {"source": "restored", "base": "base", "finetuned": "sft", "top_p": p}
        _manifest(root, f"r_{key}", source="restored", base="base", finetuned="sft",
                  recipe={"mode": "top_p", "top_p": p, "layers": None, "layer_ids": None})
    for g in GROUPS:
        checkpoints[f"r_{g}"] = {"source": "restored", "base": "base", "finetuned": "sft", "layers": g}
        _manifest(root, f"r_{g}", source="restored", base="base", finetuned="sft",
                  recipe={"mode": "layers", "top_p": 1.0, "layers": g, "layer_ids": [0]})
    for c in [c for c in checkpoints if c.startswith("r_")]:
        pairs[c] = {"base": "base", "finetuned": c, "label": c}
    config = {"checkpoints": checkpoints, "pairs": pairs, "artifacts": {
        "restore_topk": {"suite": "id", "ood_suite": "ood", "reference": "sft",
                         "pairs": ["sft", "r_top100", "r_top5", "r_top20"]},
        "restore_layers": {"suite": "id", "ood_suite": "ood", "reference": "sft",
                           "pairs": ["sft", *[f"r_{g}" for g in GROUPS]]},
        "restore_table": {"suite": "id", "ood_suite": "ood", "reference": "sft",
                          "pairs": ["sft", "r_top5", "r_top20", "r_top100", *[f"r_{g}" for g in GROUPS]]}}}
    w = World(root, config)
    w.evaluate("base", 0.5, (0.6, 0.4), seed=1)
    w.evaluate("sft", 0.7, (0.2, 0.1), seed=2)
    for i, c in enumerate(c for c in checkpoints if c.startswith("r_")):
        w.evaluate(c, 0.6, (0.3 + 0.05 * i, 0.3), seed=3 + i)
    return w


def test_every_restoration_artifact_is_catalogued_and_rendered():
    assert set(OOD_ARTIFACTS) <= set(ARTIFACTS) and set(OOD_ARTIFACTS) <= set(handled())
    for name in OOD_ARTIFACTS:
        assert "eval" in ARTIFACTS[name].needs and ARTIFACTS[name].caption


def test_restore_topk_numbers(restoration_world, tmp_path):
    w = restoration_world
    ctx = w.render("restore_topk", tmp_path)
    rows = restoration_rows(ctx).set_index("checkpoint")
    assert list(rows.role) == ["base", "sft", "restored", "restored", "restored"]
    assert rows.loc["r_top20", "top_p"] == 0.2 and rows.loc["sft", "top_p"] == 0.0
    for c in rows.index:
        for suite in ("id", "ood"):
            assert rows.loc[c, suite] == pytest.approx(w.mean(suite, c), abs=1e-12)
    for c in ("r_top5", "r_top20", "r_top100"):
        for suite in ("id", "ood"):
            x, s, b = w.mean(suite, c), w.mean(suite, "sft"), w.mean(suite, "base")
            assert rows.loc[c, f"{suite}_recovered"] == pytest.approx((x - s) / (b - s))
            assert rows.loc[c, f"{suite}_vs_sft"] == pytest.approx(x - s)
            assert rows.loc[c, f"{suite}_vs_sft_lo"] < x - s < rows.loc[c, f"{suite}_vs_sft_hi"]
        assert rows.loc[c, "id_lo"] < rows.loc[c, "id"] < rows.loc[c, "id_hi"]


def test_restore_layers_renders_and_reads_the_groups(restoration_world, tmp_path):
    ctx = restoration_world.render("restore_layers", tmp_path)
    rows = restoration_rows(ctx)
    assert sorted(rows.layers.dropna()) == sorted(GROUPS)


def test_restore_table(restoration_world, tmp_path):
    w = restoration_world
    w.render("restore_table", tmp_path)
    table = pd.read_csv(tmp_path / "restore_table.csv").set_index("checkpoint")
    assert len(table) == 1 + 1 + 3 + len(GROUPS)
    for c in table.index:
        assert table.loc[c, "ood"] == pytest.approx(w.mean("ood", c), abs=1e-12)
    x, s, b = w.mean("id", "r_first"), w.mean("id", "sft"), w.mean("id", "base")
    assert table.loc["r_first", "id_recovered"] == pytest.approx((x - s) / (b - s))
    md = (tmp_path / "restore_table.md").read_text()
    assert "first quarter of layers" in md and "top 20% of singular directions" in md
    assert f"{100 * (x - s):+.1f} [" in md


def test_restoration_errors_name_the_problem(restoration_world, tmp_path):
    w = restoration_world
    ctx = w.render("restore_topk", tmp_path)
    no_ood = TrainingContext(**{**ctx.__dict__, "inputs": {k: v for k, v in ctx.inputs.items() if "ood" not in k}})
    with pytest.raises(ArtifactInputError, match="ood_suite"):
        restoration_rows(no_ood)
    no_ref = TrainingContext(**{**ctx.__dict__, "spec": {k: v for k, v in ctx.spec.items() if k != "reference"}})
    with pytest.raises(ArtifactInputError, match="reference"):
        restoration_rows(no_ref)
    _manifest(w.root, "r_top5", source="run", run="x", step=1)  # not a restored checkpoint
    with pytest.raises(ArtifactInputError, match="r_top5.*not a restored"):
        restoration_rows(ctx)


def _rotation_table(path, shift: float):
    rows = []
    for t, layer in (("model.layers.0.mlp.up_proj.weight", 0), ("model.layers.1.mlp.up_proj.weight", 1)):
        for i in range(6):
            rows.append({"tensor": t, "layer": layer, "index": i, "left_deg": shift + i + layer, "right_deg": 2 * i,
                         "rel_sv_change": (-1) ** i * 0.01, "left_window_deg": shift + i if i <= 2 else np.nan,
                         "right_window_deg": i if i <= 2 else np.nan})
    df = pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    g = df.groupby("layer")
    pd.DataFrame({"layer": [0, 1], "left_deg_mean": g.left_deg.mean().values,
                  "right_deg_mean": g.right_deg.mean().values}).to_csv(path.parent / "rotation_layers.csv", index=False)
    return df


def test_rotation_profile(tmp_path):
    root = tmp_path / "results"
    checkpoints = {"base": {"source": "toy_base"}, "sft": {"source": "run", "run": "sft", "step": "final"},
                   "rl": {"source": "run", "run": "rl", "step": "final"}}
    pairs = {"sft": {"base": "base", "finetuned": "sft", "kind": "sft", "label": "SFT"},
             "rl_vs_base": {"base": "base", "finetuned": "rl", "kind": "rl", "label": "SFT then RL"},
             "rl": {"base": "sft", "finetuned": "rl", "kind": "rl", "label": "RL from SFT"}}
    for c in checkpoints:
        _manifest(root, c, source="run")
    config = {"checkpoints": checkpoints, "pairs": pairs,
              "artifacts": {"rotation_profile": {"suite": "id", "ood_suite": "ood", "pairs": list(pairs)},
                            "rotation_table": {"suite": "id", "ood_suite": "ood", "pairs": list(pairs)}}}
    w = World(root, config)
    for i, c in enumerate(checkpoints):
        w.evaluate(c, 0.5, (0.4, 0.3), seed=20 + i)
    tables = {p: _rotation_table(root / "pairs" / p / "rotation.csv", shift=10 * j) for j, p in enumerate(pairs)}
    ctx = w.render("rotation_profile", tmp_path)
    curves = rotation_curves(ctx)
    for p, df in tables.items():
        cur = curves[curves.pair == p].set_index("index")
        for i in range(6):
            sel = df[df["index"] == i]
            assert cur.loc[i, "left_deg"] == pytest.approx(sel.left_deg.mean())
            assert cur.loc[i, "abs_rel_sv_change"] == pytest.approx(0.01)
            assert cur.loc[i, "n_matrices"] == 2
        assert np.isnan(cur.loc[4, "left_window_deg"])
    w.render("rotation_table", tmp_path)
    table = pd.read_csv(tmp_path / "rotation_table.csv").set_index("pair")
    for p, df in tables.items():
        assert table.loc[p, "left_deg_all"] == pytest.approx(df.left_deg.mean())
        assert table.loc[p, "left_deg_top_quarter"] == pytest.approx(df[df["index"] < 1].left_deg.mean())  # 6 // 4 = 1
        assert table.loc[p, "ood"] == pytest.approx(w.mean("ood", pairs[p]["finetuned"]), abs=1e-12)


def test_sft_then_rl(tmp_path):
    root = tmp_path / "results"
    lengths = {"s10": 10, "s20": 20, "final": 40}
    checkpoints = {"base": {"source": "toy_base"}}
    pairs = {}
    _manifest(root, "base", source="toy_base")
    for key, n in lengths.items():
        step = "final" if key == "final" else n
        checkpoints[f"sft_{key}"] = {"source": "run", "run": "sft", "step": step}
        checkpoints[f"rl_{key}"] = {"source": "run", "run": f"rl_{key}", "step": "final"}
        _manifest(root, f"sft_{key}", source="run", run="sft", step=step)
        _manifest(root, f"rl_{key}", source="run", run=f"rl_{key}", step="final")
        pairs[f"sft_{key}"] = {"base": "base", "finetuned": f"sft_{key}", "kind": "sft", "label": f"SFT {n}"}
        pairs[f"rl_{key}"] = {"base": f"sft_{key}", "finetuned": f"rl_{key}", "kind": "rl", "label": f"RL {n}"}
    order = ["sft_final", "rl_final", "sft_s10", "rl_s10", "sft_s20", "rl_s20"]
    config = {"checkpoints": checkpoints, "pairs": pairs,
              "artifacts": {"sft_then_rl": {"suite": "id", "ood_suite": "ood", "pairs": order},
                            "sft_then_rl_table": {"suite": "id", "ood_suite": "ood", "pairs": order}}}
    w = World(root, config)
    w.evaluate("base", 0.5, (0.6, 0.5), seed=40)
    for i, key in enumerate(lengths):
        w.evaluate(f"sft_{key}", 0.7, (0.4 - 0.1 * i, 0.3), seed=41 + i)
        w.evaluate(f"rl_{key}", 0.75, (0.5, 0.4), seed=51 + i)
    runs = {"sft": {"spec": {"steps": 40}}}
    ctx = w.render("sft_then_rl", tmp_path, runs=runs)
    rows = sft_then_rl_rows(ctx)
    assert list(rows.sft_steps) == [10, 20, 40]
    for _, r in rows.iterrows():
        for suite in ("id", "ood"):
            x, s, b = w.mean(suite, r.rl), w.mean(suite, r.sft), w.mean(suite, "base")
            assert r[f"{suite}_rl_gain"] == pytest.approx(x - s)
            assert r[f"{suite}_recovered"] == pytest.approx((x - s) / (b - s))
    w.render("sft_then_rl_table", tmp_path, runs=runs)
    table = pd.read_csv(tmp_path / "sft_then_rl_table.csv")
    assert list(table.sft_steps) == [10, 20, 40]
    assert table.ood_rl_gain.tolist() == pytest.approx([w.mean("ood", f"rl_{k}") - w.mean("ood", f"sft_{k}") for k in lengths])
    no_runs = TrainingContext(**{**ctx.__dict__, "runs": {}})
    with pytest.raises(ArtifactInputError, match="SFT length of checkpoint 'sft_final'"):
        sft_then_rl_rows(no_runs)
