"""The restoration rules run for real on the synthetic config's tiny checkpoints: a restored
checkpoint through ``restore_checkpoint`` (checked against an independent numpy construction
and, for p = 0, bitwise against the fine-tune) and a pair's rotation tables through
``pair_rotation`` (checked against scipy's subspace angles on the SVDs of the stored weights)."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import yaml
from safetensors import safe_open

from offprincipal.config import ConfigError, validate

REPO = Path(__file__).resolve().parent.parent


def _config():
    config = yaml.safe_load((REPO / "config" / "synthetic.yaml").read_text())
    config["name"] = "restoretest"
    config["checkpoints"].update({
        "syn_rst_q": {"source": "restored", "base": "syn_base", "finetuned": "syn_sft", "top_p": 0.25},
        "syn_rst_none": {"source": "restored", "base": "syn_base", "finetuned": "syn_sft", "top_p": 0.0},
        "syn_rst_last": {"source": "restored", "base": "syn_base", "finetuned": "syn_sft", "layers": "last"},
    })
    config["pairs"]["syn_base__rst_q"] = {"base": "syn_base", "finetuned": "syn_rst_q", "label": "restored top 25%"}
    return config


def _tensors(d):
    out = {}
    for p in sorted(Path(d).glob("*.safetensors")):
        with safe_open(str(p), framework="pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys()})
    return out


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["checkpoints"]["syn_rst_q"].update(layers="first"), "checkpoints.syn_rst_q"),
        (lambda c: c["checkpoints"]["syn_rst_q"].pop("top_p"), "checkpoints.syn_rst_q"),
        (lambda c: c["checkpoints"]["syn_rst_q"].update(base="nope"), "checkpoints.syn_rst_q.base"),
        (lambda c: c["checkpoints"]["syn_rst_q"].update(top_p=1.5), "checkpoints.syn_rst_q.top_p"),
        (lambda c: c["checkpoints"]["syn_rst_last"].update(layers="second"), "checkpoints.syn_rst_last.layers"),
    ],
)
def test_invalid_restored_checkpoint_names_the_key(edit, key):
    config = _config()
    validate(copy.deepcopy(config))
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert f"'{key}'" in str(err.value)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("restore_wf")
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(), sort_keys=False))
    res = "results/restoretest"  # targets relative to --directory
    targets = [f"{res}/checkpoints/{c}.json" for c in ("syn_rst_q", "syn_rst_none", "syn_rst_last")]
    targets += [f"{res}/pairs/{p}/rotation.csv" for p in ("syn_base__sft", "syn_base__rst_q")]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(root),
           f"--configfile={cfg}", "--cores", "2", *targets]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return root / res


def test_restored_checkpoint_through_the_rule(built):
    m = json.loads((built / "checkpoints" / "syn_rst_q.json").read_text())
    assert m["source"] == "restored" and m["base"] == "syn_base" and m["finetuned"] == "syn_sft"
    assert m["recipe"]["mode"] == "top_p" and m["recipe"]["top_p"] == 0.25
    base = _tensors(json.loads((built / "checkpoints" / "syn_base.json").read_text())["path"])
    ft = _tensors(json.loads((built / "checkpoints" / "syn_sft.json").read_text())["path"])
    got = _tensors(m["path"])
    assert got.keys() == ft.keys() and m["restored_tensors"] > 0
    checked = 0
    for k, t in ft.items():
        if t.ndim != 2 or "layers." not in k:
            continue
        wb, wf = base[k].double().numpy(), t.double().numpy()
        ub, _, vbt = np.linalg.svd(wb, full_matrices=False)
        uf, sf, vft = np.linalg.svd(wf, full_matrices=False)
        r = math.ceil(0.25 * min(wf.shape))
        ref = ub[:, :r] @ np.diag(sf[:r]) @ vbt[:r] + uf[:, r:] @ np.diag(sf[r:]) @ vft[r:]
        exp = torch.from_numpy(ref).float().to(torch.bfloat16).float()
        assert got[k].dtype == torch.bfloat16
        assert float((got[k].float() - exp).abs().max()) <= float(exp.abs().max()) * 2**-8, k
        checked += 1
    assert checked > 0


def test_restoring_nothing_through_the_rule_is_the_fine_tune_bitwise(built):
    m = json.loads((built / "checkpoints" / "syn_rst_none.json").read_text())
    ft = _tensors(json.loads((built / "checkpoints" / "syn_sft.json").read_text())["path"])
    got = _tensors(m["path"])
    assert got.keys() == ft.keys()
    for k in ft:
        assert got[k].dtype == ft[k].dtype and torch.equal(got[k].view(torch.uint8), ft[k].view(torch.uint8)), k


def test_layer_group_through_the_rule_touches_only_that_quarter(built):
    m = json.loads((built / "checkpoints" / "syn_rst_last.json").read_text())
    assert m["recipe"]["layer_ids"] == [3]  # 4 synthetic layers: the last quarter is layer 3
    ft = _tensors(json.loads((built / "checkpoints" / "syn_sft.json").read_text())["path"])
    got = _tensors(m["path"])
    changed = {k for k in ft if not torch.equal(got[k], ft[k])}
    assert changed and all(".layers.3." in k for k in changed)


def test_rotation_tables_through_the_rule(built):
    import pandas as pd

    curve = pd.read_csv(built / "pairs" / "syn_base__sft" / "rotation.csv")
    layers = pd.read_csv(built / "pairs" / "syn_base__sft" / "rotation_layers.csv")
    assert sorted(layers["layer"]) == [0, 1, 2, 3]
    base = _tensors(json.loads((built / "checkpoints" / "syn_base.json").read_text())["path"])
    ft = _tensors(json.loads((built / "checkpoints" / "syn_sft.json").read_text())["path"])
    name = "model.layers.1.self_attn.q_proj.weight"
    u0, s0, _ = np.linalg.svd(base[name].double().numpy(), full_matrices=False)
    u1, s1, _ = np.linalg.svd(ft[name].double().numpy(), full_matrices=False)
    rows = curve[curve.tensor == name].set_index("index")
    for i in (0, 5):
        expect = np.rad2deg(np.arccos(min(1.0, abs(u0[:, i] @ u1[:, i]))))
        np.testing.assert_allclose(rows.loc[i, "left_deg"], expect, atol=1e-3)
        np.testing.assert_allclose(rows.loc[i, "rel_sv_change"], (s1[i] - s0[i]) / s0[i], rtol=1e-6, atol=1e-9)
    w = 4  # metrics.rotation_window default
    expect = np.rad2deg(scipy.linalg.subspace_angles(u0[:, 2:2 + w], u1[:, 2:2 + w]).max())
    np.testing.assert_allclose(rows.loc[2, "left_window_deg"], expect, atol=1e-3)
    # the dense stand-in rotates the top window far; the restored pair's top directions are the
    # base's again (up to bf16 rounding; near index r the two parts mix, see offprincipal.restoration)
    rst = pd.read_csv(built / "pairs" / "syn_base__rst_q" / "rotation.csv")
    top = rst[(rst.tensor == name) & (rst["index"] < 3)]
    assert rows.loc[0, "left_window_deg"] > 45
    assert (top.left_deg < 3).all() and float(top.left_window_deg.iloc[0]) < 5


def test_paper_config_plans_the_restorations(tmp_path):
    """Section 4 of the plan: four restored Table 1 SFT checkpoints, each built by the restore
    rule from its two fetched parents and evaluated on the four benchmarks."""
    from offprincipal.config import load

    config = load(REPO / "config" / "paper.yaml")
    restored = {c: s for c, s in config["checkpoints"].items() if s["source"] == "restored"}
    assert {(s["finetuned"], s["base"], s.get("top_p"), s.get("layers")) for s in restored.values()} == {
        ("ds_r1_distill_qwen_1p5b", "qwen2p5_math_1p5b", 0.2, None),
        ("ds_r1_distill_qwen_1p5b", "qwen2p5_math_1p5b", None, "first"),
        ("klear_reasoner_8b_sft", "qwen3_8b_base", 0.2, None),
        ("klear_reasoner_8b_sft", "qwen3_8b_base", None, "first"),
    }
    evaluated = {c for ckpts in config["evaluations"]["checkpoints"].values() for c in ckpts}
    assert set(restored) <= evaluated
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile=config/paper.yaml", "results/paper/eval/math/ds_r1_distill_qwen_1p5b_restore_top20.json"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "restore_checkpoint" in out and out.count("fetch_checkpoint") >= 1
    assert "checkpoints/qwen2p5_math_1p5b.json" in out and "checkpoints/ds_r1_distill_qwen_1p5b.json" in out


def test_restore_config_plans_the_three_experiments(tmp_path):
    """config/restore.yaml: its own results folder, SFT on one task, ID and OOD suites, the
    restorations of (a), the RL runs of (b) and the rotation tables of (c) in its DAG."""
    import re

    from offprincipal.config import load

    config = load(REPO / "config" / "restore.yaml")
    assert config["name"] == "restore"
    suites = config["evaluations"]["suites"]
    sft_task = config["runs"]["sft"]["data"]
    assert list(suites["id"]["tasks"]) == [f"toy:{sft_task}"]
    assert suites["ood"]["tasks"] and not any(t.split(":")[1].startswith(sft_task.rsplit("_d", 1)[0])
                                              for t in suites["ood"]["tasks"])
    restored = {c: s for c, s in config["checkpoints"].items() if s["source"] == "restored"}
    assert sorted(s["top_p"] for s in restored.values() if "top_p" in s) == [0.05, 0.1, 0.2, 0.5, 1.0]
    assert sorted(s["layers"] for s in restored.values() if "layers" in s) == ["first", "last", "middle"]
    default = load(REPO / "config" / "config.yaml")
    assert not any(s["source"] == "restored" for s in default["checkpoints"].values())
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile=config/restore.yaml"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    table = out.split("Job stats:", 1)[1]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert jobs["restore_checkpoint"] == len(restored) == 8
    assert jobs["pair_rotation"] == 3 and jobs["render_figure"] == 4 and jobs["render_table"] == 3
    assert jobs["train_run"] == 4 and jobs["paired_evaluations_ood"] == 7
