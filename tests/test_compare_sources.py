"""Checkpoint sources of `offprincipal compare`: local directories (single-file, sharded) and raw
verl FSDP2 shards written for real on 2 gloo ranks, merged and checked bitwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from offprincipal.checkpoints.local import header_fingerprint, register_local_checkpoint
from offprincipal.checkpoints.reader import Checkpoint, CheckpointError
from offprincipal.checkpoints.verl import actor_dir_of, build_verl_checkpoint, merge_fsdp_checkpoint

transformers = pytest.importorskip("transformers")

TESTS = Path(__file__).resolve().parent
TINY = dict(vocab_size=67, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64)  # vocab 67: uneven shards on 2 ranks


def tiny_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**TINY, tie_word_embeddings=True))
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**TINY, tie_word_embeddings=False))
    with torch.no_grad():  # norms start at ones; make every tensor distinct
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


def all_stored(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    out = {}
    for arch in ("qwen2", "qwen3"):
        model = tiny_model(arch)
        model.save_pretrained(root / f"{arch}_fp32")  # fp32, the weights the FSDP run holds
        out[arch] = (model, root / f"{arch}_fp32")
    model = out["qwen3"][0]
    model.save_pretrained(root / "sharded", max_shard_size="20KB")
    out["sharded"] = (model, root / "sharded")
    return root, out


# ------------------------------------------------------------------ local


@pytest.mark.parametrize("which", ["qwen3", "sharded"])
def test_local_checkpoint_manifest_and_fingerprint(models, which, tmp_path):
    root, m = models
    model, path = m[which]
    rec = register_local_checkpoint("mine", path, manifest=tmp_path / "mine.json")
    assert json.loads((tmp_path / "mine.json").read_text()) == rec
    assert rec["source"] == "local" and rec["path"] == str(path.absolute())
    on_disk = sorted(p.name for p in path.glob("*.safetensors"))
    assert rec["files"] == on_disk and (len(on_disk) > 1) == (which == "sharded")
    assert rec["bytes"] == sum((path / f).stat().st_size for f in on_disk)
    # independent fingerprint: sha256 over each file's name, header length and header bytes
    import hashlib
    import struct

    h = hashlib.sha256()
    for f in on_disk:
        raw = (path / f).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        h.update(f.encode() + b"\0" + raw[:8] + raw[8 : 8 + n])
    assert rec["fingerprint"] == "sha256:" + h.hexdigest()
    # every tensor reads back as the model's (tied lm_head dropped by save_pretrained)
    with Checkpoint(path) as ck:
        assert set(ck.names()) == set(model.state_dict())
        for n in ck.names():
            assert torch.equal(ck.load(n), model.state_dict()[n])


def test_fingerprint_follows_the_layout_not_the_values(tmp_path):
    model = tiny_model("qwen3", seed=1)  # its own model: this test edits the weights
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    model.save_pretrained(a)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(1.0)
    model.save_pretrained(b)  # same names, shapes, dtypes: same headers
    model.to(torch.bfloat16).save_pretrained(c)
    fa, fb, fc = (header_fingerprint(d, ["model.safetensors"]) for d in (a, b, c))
    assert fa == fb
    assert fc != fa


def test_local_errors_name_the_checkpoint_and_the_problem(models, tmp_path):
    _, m = models
    with pytest.raises(CheckpointError, match=r"'x'.*is not a directory"):
        register_local_checkpoint("x", tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"'x'.*not a Hugging Face checkpoint directory \(no config.json\)"):
        register_local_checkpoint("x", empty)
    (empty / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no \\*.safetensors files"):
        register_local_checkpoint("x", empty)
    sharded = tmp_path / "sharded"
    shutil.copytree(m["sharded"][1], sharded)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    tensor = next(k for k, v in index["weight_map"].items() if v == victim)
    (sharded / victim).unlink()
    with pytest.raises(CheckpointError, match=f"shard file {victim} \\(holding tensor '{tensor}'\\) is missing"):
        register_local_checkpoint("x", sharded)
    broken = tmp_path / "broken"
    shutil.copytree(m["qwen3"][1], broken)
    raw = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="'x'.*corrupted safetensors file model.safetensors"):
        register_local_checkpoint("x", broken)


# ------------------------------------------------------------------ verl


@pytest.fixture(scope="module")
def verl_runs(models):
    root, m = models
    runs = {}
    for arch in ("qwen2", "qwen3"):
        run = root / f"verl_{arch}"
        done = subprocess.run(
            [sys.executable, str(TESTS / "verl_fsdp_writer.py"), str(m[arch][1]), str(run), "3"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[arch] = run / "global_step_3" / "actor"
    return runs


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_verl_shards_merge_to_the_models_weights_in_bf16_bitwise(models, verl_runs, arch, tmp_path):
    _, m = models
    model, _ = m[arch]
    actor = verl_runs[arch]
    shards = sorted(p.name for p in actor.glob("model_world_size_*"))
    assert shards == ["model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]
    # the shards really are DTensor pieces, unevenly split where the row count is odd
    local = torch.load(actor / shards[1], weights_only=True, mmap=True)
    emb = local["model.embed_tokens.weight"]
    assert type(emb).__name__ == "DTensor" and tuple(emb._local_tensor.shape) == (33, 32)

    out = tmp_path / "merged"
    info = merge_fsdp_checkpoint(actor.parent, out)  # global_step_N works as well as .../actor
    assert info["world_size"] == 2 and info["step"] == 3
    merged = all_stored(out)
    expected = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    if arch == "qwen2":  # tied: save_pretrained's layout has no lm_head.weight
        expected.pop("lm_head.weight")
        assert info["tied_lm_head_dropped"]
    assert set(merged) == set(expected)
    for name, t in expected.items():
        assert merged[name].dtype == torch.bfloat16
        assert torch.equal(merged[name].view(torch.int16), t.view(torch.int16)), name
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and config["architectures"] == type(model).__name__.split()
    assert (out / "generation_config.json").is_file()
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt"}


def test_verl_merge_shards_its_output_above_the_size_limit(models, verl_runs, tmp_path):
    out = tmp_path / "merged"
    info = merge_fsdp_checkpoint(verl_runs["qwen3"], out, max_shard_bytes=20_000)
    assert len(info["files"]) > 1 and (out / "model.safetensors.index.json").is_file()
    single = tmp_path / "single"
    merge_fsdp_checkpoint(verl_runs["qwen3"], single)
    with Checkpoint(out) as a, Checkpoint(single) as b:
        assert a.names() == b.names()
        assert all(torch.equal(a.load(n), b.load(n)) for n in a.names())


def test_verl_manifest_records_the_run_and_a_fingerprint(verl_runs, tmp_path):
    rec = build_verl_checkpoint("rl_step3", verl_runs["qwen3"], tmp_path / "ck", manifest=tmp_path / "m.json")
    assert rec["source"] == "verl" and rec["verl_step"] == 3 and rec["verl_world_size"] == 2
    assert rec["path"] == str((tmp_path / "ck").absolute())
    assert rec["fingerprint"] == header_fingerprint(tmp_path / "ck", rec["files"])
    assert json.loads((tmp_path / "m.json").read_text()) == rec


def test_verl_errors_name_the_shard(verl_runs, tmp_path):
    actor = tmp_path / "global_step_3" / "actor"
    shutil.copytree(verl_runs["qwen3"], actor)
    assert actor_dir_of(actor.parent) == actor
    raw = (actor / "model_world_size_2_rank_1.pt").read_bytes()
    (actor / "model_world_size_2_rank_1.pt").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CheckpointError, match="model_world_size_2_rank_1.pt: cannot be read"):
        merge_fsdp_checkpoint(actor, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half written
    (actor / "model_world_size_2_rank_1.pt").unlink()
    with pytest.raises(CheckpointError, match="world size 2 but shard file\\(s\\) model_world_size_2_rank_1.pt are missing"):
        merge_fsdp_checkpoint(actor, tmp_path / "out")
    shutil.copy(verl_runs["qwen3"] / "model_world_size_2_rank_1.pt", actor)
    shutil.rmtree(actor / "huggingface")
    with pytest.raises(CheckpointError, match="no huggingface/config.json"):
        merge_fsdp_checkpoint(actor, tmp_path / "out")
    with pytest.raises(CheckpointError, match="is not a verl FSDP checkpoint"):
        actor_dir_of(tmp_path)
