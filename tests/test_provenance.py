"""Provenance sidecars and ``offprincipal verify`` on a small constructed results folder."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from offprincipal.artifacts import provenance
from offprincipal.cli import main as cli_main
from offprincipal.io import write_json

METRICS = {"eta": 1e-3, "mask_alpha": 0.5}


@pytest.fixture
def world(tmp_path):
    """results/ with a synthetic base, a run-saved fine-tune, the run, and one pair's files."""
    res = tmp_path / "results"
    for name, seed in (("base", 0), ("ft", 1)):
        d = tmp_path / "ckpts" / name
        d.mkdir(parents=True)
        g = torch.Generator().manual_seed(seed)
        save_file({"w": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g)}, str(d / "model.safetensors"))
    write_json(res / "checkpoints" / "base.json", {"name": "base", "source": "synthetic", "seed": 0,
                                                   "path": str(tmp_path / "ckpts" / "base")})
    write_json(res / "checkpoints" / "ft.json", {"name": "ft", "source": "run", "run": "r1", "step": 2,
                                                 "path": str(tmp_path / "ckpts" / "ft")})
    run = res / "runs" / "r1"
    write_json(run / "run.json", {"backend": "trl", "spec": {"lr": 1e-5}, "steps": 2, "final": "checkpoint-2"})
    (run / "metrics.jsonl").write_text('{"step": 1, "kl": 0.1}\n{"step": 2, "kl": 0.2}\n')
    (run / "checkpoint-2").mkdir()
    (run / "checkpoint-2" / "big.bin").write_bytes(b"weights")  # a subfolder: not hashed as a run input
    pair = res / "pairs" / "base__ft"
    pair.mkdir(parents=True)
    (pair / "updates.csv").write_text("tensor,sparsity\nw,0.5\n")
    out = res / "figures" / "fig9.pdf"
    out.parent.mkdir()
    out.write_bytes(b"%PDF")
    (res / "figures" / "fig9.png").write_bytes(b"png")
    inputs = {"updates": [str(pair / "updates.csv")], "runs": [str(run)],
              "base_manifests": [str(res / "checkpoints" / "base.json")],
              "ft_manifests": [str(res / "checkpoints" / "ft.json")]}
    params = {"spec": {"pairs": ["base__ft"], "suite": "toy"}, "pairs": {"base__ft": {"base": "base", "finetuned": "ft"}},
              "metrics": dict(METRICS), "config_name": "t", "synthetic": True}
    outputs = [str(out), str(res / "figures" / "fig9.png")]
    return res, inputs, outputs, params


def render_sidecar(world, **changes) -> tuple[bool, str]:
    res, inputs, outputs, params = world
    params = {**params, **changes}
    rec = provenance.build_record("fig9", inputs, outputs, params, results=res)
    path = res / "figures" / "fig9.provenance.json"
    return provenance.write_sidecar(path, rec), path.read_bytes()


def test_sidecar_records_checkpoints_config_versions_inputs(world):
    res = world[0]
    render_sidecar(world)
    rec = json.loads((res / "figures" / "fig9.provenance.json").read_text())
    assert set(rec["checkpoints"]) == {"base", "ft"}
    ft = rec["checkpoints"]["ft"]
    assert (ft["source"], ft["run"], ft["step"]) == ("run", "r1", 2)
    assert ft["run_provenance"]["spec"] == {"lr": 1e-5} and ft["run_provenance"]["backend"] == "trl"
    run_json = res / "runs" / "r1" / "run.json"
    assert ft["run_provenance"]["run_json"]["sha256"] == "sha256:" + hashlib.sha256(run_json.read_bytes()).hexdigest()
    assert rec["config"]["metrics"] == METRICS
    assert set(rec["versions"]) == set(provenance.PACKAGES)
    assert set(rec["git"]) == {"commit", "dirty"}
    upd = res / "pairs" / "base__ft" / "updates.csv"
    assert rec["inputs"]["updates"] == [{"path": "pairs/base__ft/updates.csv",
                                         "sha256": "sha256:" + hashlib.sha256(upd.read_bytes()).hexdigest()}]
    assert set(rec["inputs"]["runs"][0]["files"]) == {"run.json", "metrics.jsonl"}
    assert rec["outputs"] == ["figures/fig9.pdf", "figures/fig9.png"]


def test_noop_recompute_leaves_sidecar_untouched(world):
    written, first = render_sidecar(world)
    path = world[0] / "figures" / "fig9.provenance.json"
    mtime = path.stat().st_mtime_ns
    written_again, second = render_sidecar(world)
    assert written and not written_again
    assert first == second and path.stat().st_mtime_ns == mtime


def test_sidecar_changes_with_input_setting_or_version(world, monkeypatch):
    _, ref = render_sidecar(world)
    # an input file
    upd = world[0] / "pairs" / "base__ft" / "updates.csv"
    upd.write_text("tensor,sparsity\nw,0.6\n")
    written, changed = render_sidecar(world)
    assert written and changed != ref
    upd.write_text("tensor,sparsity\nw,0.5\n")
    assert render_sidecar(world)[1] == ref
    # a config setting
    assert render_sidecar(world, metrics={**METRICS, "eta": 2e-3})[1] != ref
    assert render_sidecar(world)[1] == ref
    # a package version
    real = provenance.package_version
    monkeypatch.setattr(provenance, "package_version", lambda d: "9.9.9" if d == "transformers" else real(d))
    bumped = render_sidecar(world)[1]
    assert bumped != ref and json.loads(bumped)["versions"]["transformers"] == "9.9.9"


def test_missing_package_and_manifest_are_named(world, monkeypatch):
    assert provenance.package_version("no-such-distribution-xyz") == "not installed"
    res = world[0]
    (res / "checkpoints" / "ft.json").unlink()
    with pytest.raises(provenance.ProvenanceError, match="checkpoint 'ft': manifest .*ft.json does not exist"):
        render_sidecar(world)


def test_checkpoint_fingerprint_reads_headers_not_weights(world, monkeypatch):
    res = world[0]
    ckpt = res.parent / "ckpts" / "base" / "model.safetensors"
    raw = ckpt.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    expected = "sha256:" + hashlib.sha256(b"model.safetensors\0" + raw[:8] + raw[8 : 8 + n]).hexdigest()
    import safetensors.torch

    def no_load(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(safetensors.torch, "load_file", no_load)
    monkeypatch.setattr(safetensors, "safe_open", no_load)
    rec = provenance.checkpoint_record("base", res / "checkpoints" / "base.json", res)
    assert rec["fingerprint"] == expected
    # the weights change in place (same layout): the header fingerprint does not
    ckpt.write_bytes(raw[: 8 + n] + bytes(len(raw) - 8 - n))
    assert provenance.checkpoint_record("base", res / "checkpoints" / "base.json", res)["fingerprint"] == expected
    # a manifest's own fingerprint (local/verl checkpoints) is taken as recorded
    write_json(res / "checkpoints" / "base.json", {"source": "local", "path": "/nowhere", "fingerprint": "sha256:ab"})
    assert provenance.checkpoint_record("base", res / "checkpoints" / "base.json", res)["fingerprint"] == "sha256:ab"


def test_verify_passes_fresh_and_names_tampered(world, capsys, tmp_path):
    res = world[0]
    render_sidecar(world)
    # a second artifact that does not read the tampered file
    _, inputs, outputs, params = world
    (res / "tables").mkdir()
    (res / "tables" / "table1.csv").write_text("x\n")
    table_inputs = {k: inputs[k] for k in ("runs", "base_manifests", "ft_manifests")}
    rec = provenance.build_record("table1", table_inputs, [str(res / "tables" / "table1.csv")], params, results=res)
    provenance.write_sidecar(res / "tables" / "table1.provenance.json", rec)
    assert provenance.verify(res) == {"fig9": [], "table1": []}
    assert cli_main(["verify", str(res)]) == 0
    (res / "pairs" / "base__ft" / "updates.csv").write_text("tensor,sparsity\nw,0.7\n")
    problems = provenance.verify(res)
    assert problems["table1"] == [] and problems["fig9"] == ["input 'updates' pairs/base__ft/updates.csv changed since rendering"]
    capsys.readouterr()
    assert cli_main(["verify", str(res)]) == 1
    out = capsys.readouterr().out
    assert "fig9: input 'updates'" in out and "stale: fig9" in out and "table1:" not in out


def test_verify_names_missing_input_and_changed_run(world):
    res = world[0]
    render_sidecar(world)
    with open(res / "runs" / "r1" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "kl": 0.3}\n')
    assert provenance.verify(res)["fig9"] == ["input 'runs' runs/r1 changed since rendering"]
    (res / "pairs" / "base__ft" / "updates.csv").unlink()
    (res / "checkpoints" / "base.json").write_text("{}\n")
    problems = provenance.verify(res)["fig9"]
    assert "input 'updates' pairs/base__ft/updates.csv is missing" in problems
    assert "checkpoint 'base' manifest checkpoints/base.json changed since rendering" in problems


def test_verify_without_sidecars_fails(tmp_path):
    assert cli_main(["verify", str(tmp_path)]) == 2


def test_sidecar_path():
    assert str(provenance.sidecar_path("r/figures/fig4.pdf")) == "r/figures/fig4.provenance.json"


def test_a_checkpoint_manifest_the_render_job_did_not_declare_is_refused(world):
    res, inputs, outputs, params = world
    undeclared = {k: v for k, v in inputs.items() if k != "ft_manifests"}
    with pytest.raises(provenance.ProvenanceError, match=r"fig9: the manifest .*ft\.json of checkpoint 'ft' is not among"):
        provenance.build_record("fig9", undeclared, outputs, params, results=res)


def test_manifests_are_recorded_once_as_checkpoints_not_again_as_inputs(world):
    res, inputs, outputs, params = world
    rec = provenance.build_record("fig9", inputs, outputs, params, results=res)
    assert set(rec["inputs"]) == {"updates", "runs"}
    assert rec["checkpoints"]["ft"]["manifest"]["path"] == "checkpoints/ft.json"
