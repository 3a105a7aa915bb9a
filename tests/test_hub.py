"""offprincipal.checkpoints.hub: the real ``snapshot_download``, offline, against a local HF cache.

Nothing here mocks ``snapshot_download``. Each test lays out a Hugging Face cache the way
``huggingface_hub`` 2.x writes it (``models--ORG--NAME/{blobs,snapshots,refs,trees}``) with a
tiny model saved by transformers, switches the Hub client to offline mode and points its endpoint
at a closed local port, so any accidental network access fails at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError
from huggingface_hub.utils import filter_repo_objects

from offprincipal.checkpoints import hub
from offprincipal.checkpoints.hub import (
    ALLOW_PATTERNS,
    HubAccessError,
    IncompleteCheckpointError,
    check_access,
    fetch_checkpoint,
    has_token,
)

REPO = "tiny-org/Tiny-Qwen3"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
LFS_SUFFIXES = (".safetensors", ".bin")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, bytes]:
    """Files of a tiny Qwen3 repo: what transformers saves plus files that must not be fetched."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        hidden_size=32,
        num_hidden_layers=2,
        vocab_size=64,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    out = tmp_path_factory.mktemp("tiny_qwen3")
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"model.safetensors", "config.json"} <= set(files)
    files["tokenizer_config.json"] = b'{"model_max_length": 128}\n'
    files["tokenizer.json"] = b'{"version": "1.0", "model": {"type": "BPE"}}\n'
    return files


@pytest.fixture(autouse=True)
def isolated_hub(monkeypatch, tmp_path):
    """No token, offline, and an endpoint nothing listens on.

    huggingface_hub reads HF_HUB_OFFLINE, HF_HOME (-> HF_TOKEN_PATH) and HF_ENDPOINT once at import
    into ``huggingface_hub.constants``, so the constants are set too (configuration, not mocks).
    """
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _etag(name: str, data: bytes) -> str:
    """Blob name in the cache: sha256 for LFS files, git blob sha1 for regular ones."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def populate_cache(
    cache: Path,
    files: dict[str, bytes],
    *,
    repo: str = REPO,
    commit: str = COMMIT,
    refs: tuple[str, ...] = ("main",),
    remote_only: dict[str, bytes] | None = None,
    tree: bool = True,
) -> Path:
    """Lay out ``files`` as a cached snapshot of ``repo@commit``; return the snapshot dir.

    ``remote_only`` are files the repo has on the Hub that were not downloaded (listed in the
    ``trees/<commit>.json`` listing that huggingface_hub >= 2 caches, absent from the snapshot).
    ``tree=False`` gives the layout older huggingface_hub versions leave (no tree listing).
    """
    storage = cache / ("models--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    listing = {}
    for name, data in {**files, **(remote_only or {})}.items():
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        entry = {"size": len(data), "blob_id": blob_id}
        if name.endswith(LFS_SUFFIXES):
            entry.update(lfs_sha256=hashlib.sha256(data).hexdigest(), lfs_size=len(data))
        listing[name] = entry
        if name in files:
            blob = storage / "blobs" / _etag(name, data)
            blob.write_bytes(data)
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (storage / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)  # no trailing newline, as huggingface_hub writes it
    if tree:
        (storage / "trees").mkdir(exist_ok=True)
        (storage / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    return snapshot


ALLOWED_TINY = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]


# ---------------------------------------------------------------- patterns and tokens


def test_allow_patterns_keep_only_weights_configs_and_tokenizer():
    keep = [
        "model.safetensors",
        "model-00001-of-00004.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "added_tokens.json",
        "chat_template.jinja",
    ]
    drop = [
        "pytorch_model.bin",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model.bin.index.json",
        "consolidated.safetensors",  # mistral-format duplicate of the weights
        "consolidated.00.pth",
        "original/consolidated.00.pth",
        "training_args.pt",
        "optimizer.pt",
        "model.gguf",
        "flax_model.msgpack",
        "tf_model.h5",
        "README.md",
        "LICENSE",
        ".gitattributes",
        "figures/benchmark.png",
        "adapter_model.safetensors",
    ]
    assert sorted(filter_repo_objects(keep + drop, allow_patterns=ALLOW_PATTERNS)) == sorted(keep)


def test_has_token_reads_env_and_saved_token(monkeypatch):
    assert has_token() is False
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    assert has_token() is True
    monkeypatch.delenv("HF_TOKEN")
    Path(hf_constants.HF_TOKEN_PATH).write_text("hf_saved_by_login")
    assert has_token() is True


# ---------------------------------------------------------------- fetching


@pytest.mark.parametrize("tree", [True, False], ids=["tree-cache", "no-tree-cache"])
def test_fetch_by_branch_resolves_commit(tmp_path, tiny_files, caplog, tree):
    cache = tmp_path / "cache"
    on_disk = {**tiny_files, "README.md": b"# tiny\n"}  # README cached by some other download
    snapshot = populate_cache(
        cache,
        on_disk,
        remote_only={"pytorch_model.bin": b"legacy weights", "logo.png": b"\x89PNG"},
        tree=tree,
    )

    with caplog.at_level(logging.WARNING, logger=hub.__name__):
        m = fetch_checkpoint("tiny_base", REPO, "main", cache_dir=cache)

    assert m["commit"] == COMMIT
    assert m["revision"] == "main"
    assert m["pinned"] is False
    assert m["source"] == "hub" and m["name"] == "tiny_base" and m["repo"] == REPO
    assert Path(m["path"]).is_absolute()
    assert Path(m["path"]) == snapshot.absolute()
    assert Path(m["path"]).name == m["commit"]
    # README.md is in the snapshot dir but outside ALLOW_PATTERNS; pytorch_model.bin is only on the
    # Hub: with the tree cache, hf_hub would call the snapshot incomplete without allow_patterns.
    assert m["files"] == ALLOWED_TINY
    assert any("mutable" in r.getMessage() and "main" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("tree", [True, False], ids=["tree-cache", "no-tree-cache"])
def test_fetch_by_commit_resolves_commit(tmp_path, tiny_files, caplog, tree):
    cache = tmp_path / "cache"
    populate_cache(cache, tiny_files, remote_only={"pytorch_model.bin": b"legacy weights"}, tree=tree)

    with caplog.at_level(logging.WARNING, logger=hub.__name__):
        m = fetch_checkpoint("tiny_base", REPO, COMMIT, cache_dir=cache)

    assert m["commit"] == COMMIT == m["revision"]
    assert m["pinned"] is True
    assert m["files"] == ALLOWED_TINY
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_two_revisions_of_one_repo(tmp_path, tiny_files):
    """Nemotron v1/v2 style: one repo, two tags pointing at two commits."""
    cache = tmp_path / "cache"
    populate_cache(cache, tiny_files, commit=COMMIT, refs=("v1",))
    populate_cache(cache, tiny_files, commit=OTHER_COMMIT, refs=("v2", "main"))
    v1 = fetch_checkpoint("tiny_v1", REPO, "v1", cache_dir=cache)
    v2 = fetch_checkpoint("tiny_v2", REPO, "v2", cache_dir=cache)
    assert (v1["commit"], v2["commit"]) == (COMMIT, OTHER_COMMIT)
    assert v1["path"] != v2["path"]


def test_manifest_written_atomically(tmp_path, tiny_files):
    cache = tmp_path / "cache"
    populate_cache(cache, tiny_files)
    out_dir = tmp_path / "results" / "checkpoints"
    manifest = out_dir / "tiny_base.json"

    m = fetch_checkpoint("tiny_base", REPO, COMMIT, cache_dir=cache, manifest=manifest)

    assert json.loads(manifest.read_text()) == m
    assert set(m) == {"name", "source", "repo", "revision", "commit", "path", "files", "pinned"}
    assert sorted(p.name for p in out_dir.iterdir()) == ["tiny_base.json"]  # no temp files left


def test_failed_fetch_leaves_existing_manifest_untouched(tmp_path):
    manifest = tmp_path / "checkpoints" / "tiny_base.json"
    manifest.parent.mkdir()
    manifest.write_text('{"old": true}\n')
    with pytest.raises(RuntimeError):
        fetch_checkpoint("tiny_base", REPO, "main", cache_dir=tmp_path / "cache", manifest=manifest)
    assert manifest.read_text() == '{"old": true}\n'
    assert [p.name for p in manifest.parent.iterdir()] == ["tiny_base.json"]


# ---------------------------------------------------------------- gated repos


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "online"])
def test_gated_without_token_raises_before_anything(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", offline)
    if not offline:
        monkeypatch.delenv("HF_HUB_OFFLINE")
    cache = tmp_path / "cache"
    manifest = tmp_path / "m.json"
    repo = "meta-llama/Meta-Llama-3-8B-Instruct"

    with pytest.raises(HubAccessError) as info:
        fetch_checkpoint("llama3_8b_instruct", repo, "main", cache_dir=cache, gated=True, manifest=manifest)

    msg = str(info.value)
    assert repo in msg
    assert "HF_TOKEN" in msg and "hf auth login" in msg and "licence" in msg
    assert f"https://huggingface.co/{repo}" in msg
    assert not cache.exists() and not manifest.exists()  # nothing was attempted
    with pytest.raises(HubAccessError):
        check_access(repo, gated=True)


def test_gated_checks(tmp_path, tiny_files, monkeypatch):
    check_access(REPO, gated=False)  # never needs a token
    cache = tmp_path / "cache"
    populate_cache(cache, tiny_files)
    # cached snapshot, offline, no token: served from the cache
    m = fetch_checkpoint("tiny_gated", REPO, "main", cache_dir=cache, gated=True)
    assert m["commit"] == COMMIT
    # not cached at that revision: still refused
    with pytest.raises(HubAccessError):
        check_access(REPO, gated=True, revision="v9", cache_dir=cache)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    check_access(REPO, gated=True, revision="v9", cache_dir=cache)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("revision", ["main", COMMIT])
def test_uncached_offline_names_checkpoint_repo_revision(tmp_path, revision):
    with pytest.raises(RuntimeError) as info:
        fetch_checkpoint("missing_ckpt", "nobody/not-cached", revision, cache_dir=tmp_path / "cache")
    err = info.value
    assert not isinstance(err, HubAccessError)
    for part in ("missing_ckpt", "nobody/not-cached", revision):
        assert part in str(err)
    assert isinstance(err.__cause__, LocalEntryNotFoundError)


def test_uncached_revision_of_cached_repo(tmp_path, tiny_files):
    cache = tmp_path / "cache"
    populate_cache(cache, tiny_files)
    with pytest.raises(RuntimeError, match=r"tiny_v2.*tiny-org/Tiny-Qwen3.*v2"):
        fetch_checkpoint("tiny_v2", REPO, "v2", cache_dir=cache)


def test_incomplete_snapshot_per_tree_listing(tmp_path, tiny_files):
    """The tree listing says model.safetensors exists but it was never downloaded."""
    cache = tmp_path / "cache"
    present = {k: v for k, v in tiny_files.items() if k != "model.safetensors"}
    populate_cache(cache, present, remote_only={"model.safetensors": tiny_files["model.safetensors"]})
    with pytest.raises(RuntimeError, match="tiny_base") as info:
        fetch_checkpoint("tiny_base", REPO, "main", cache_dir=cache)
    assert isinstance(info.value.__cause__, IncompleteSnapshotError)


def test_snapshot_without_safetensors(tmp_path, tiny_files):
    cache = tmp_path / "cache"
    files = {"config.json": tiny_files["config.json"], "pytorch_model.bin": b"legacy weights"}
    populate_cache(cache, files)
    manifest = tmp_path / "m.json"
    with pytest.raises(IncompleteCheckpointError, match="safetensors") as info:
        fetch_checkpoint("legacy_ckpt", REPO, "main", cache_dir=cache, manifest=manifest)
    assert "legacy_ckpt" in str(info.value) and REPO in str(info.value)
    assert "pytorch_model.bin" in str(info.value)
    assert not manifest.exists()


def test_snapshot_without_config(tmp_path, tiny_files):
    cache = tmp_path / "cache"
    populate_cache(cache, {"model.safetensors": tiny_files["model.safetensors"]})
    with pytest.raises(IncompleteCheckpointError, match=r"no_config.*config\.json"):
        fetch_checkpoint("no_config", REPO, "main", cache_dir=cache)


def test_sharded_snapshot_missing_a_shard(tmp_path, tiny_files):
    cache = tmp_path / "cache"
    index = {
        "metadata": {"total_size": 1},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    files = {
        "config.json": tiny_files["config.json"],
        "model.safetensors.index.json": json.dumps(index).encode(),
        "model-00001-of-00002.safetensors": tiny_files["model.safetensors"],
    }
    populate_cache(cache, files, tree=False)  # no tree listing: hf_hub cannot tell it is partial
    with pytest.raises(IncompleteCheckpointError, match="model-00002-of-00002.safetensors"):
        fetch_checkpoint("sharded", REPO, "main", cache_dir=cache)


# ---------------------------------------------------------------- pinning branch revisions


PAPER_CONFIG = Path(__file__).resolve().parent.parent / "config" / "paper.yaml"


def test_pin_revisions_writes_the_fetched_commit_into_the_config(tmp_path, tiny_files):
    import yaml

    from offprincipal.cli import main
    from offprincipal.config import load

    cache, manifests, cfg = tmp_path / "cache", tmp_path / "manifests", tmp_path / "paper.yaml"
    cfg.write_text(PAPER_CONFIG.read_text())
    original = yaml.safe_load(cfg.read_text())
    assert original["checkpoints"]["qwen3_4b"]["revision"] == "main"
    populate_cache(cache, tiny_files, repo="Qwen/Qwen3-4B")
    fetch_checkpoint("qwen3_4b", "Qwen/Qwen3-4B", "main", cache_dir=cache, manifest=manifests / "qwen3_4b.json")
    ref = (cache / "models--Qwen--Qwen3-4B" / "refs" / "main").read_text()  # what the Hub's main pointed to

    assert main(["pin-revisions", str(cfg), "--manifests", str(manifests), "--require-all"]) == 1  # others unfetched
    pinned = load(cfg)  # still a valid config
    assert pinned["checkpoints"]["qwen3_4b"]["revision"] == ref == COMMIT
    expected = dict(original["checkpoints"], qwen3_4b={**original["checkpoints"]["qwen3_4b"], "revision": ref})
    assert yaml.safe_load(cfg.read_text())["checkpoints"] == expected
    before, after = PAPER_CONFIG.read_text().splitlines(), cfg.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1  # one revision line; comments and layout kept
    assert changed[0][0].strip() == "revision: main" and ref in changed[0][1]
    assert main(["pin-revisions", str(cfg), "--manifests", str(manifests)]) == 0  # nothing left to pin for it
    assert cfg.read_text().splitlines() == after


def test_pin_revisions_refuses_a_manifest_of_another_revision_and_writes_nothing(tmp_path, tiny_files):
    from offprincipal.checkpoints.pinning import PinningError, pin_revisions

    cache, manifests, cfg = tmp_path / "cache", tmp_path / "manifests", tmp_path / "paper.yaml"
    cfg.write_text(PAPER_CONFIG.read_text())
    populate_cache(cache, tiny_files, repo="Qwen/Qwen3-8B", refs=("main", "v2"))
    fetch_checkpoint("qwen3_8b", "Qwen/Qwen3-8B", "v2", cache_dir=cache, manifest=manifests / "qwen3_8b.json")
    with pytest.raises(PinningError, match=r"checkpoint 'qwen3_8b'.*Qwen/Qwen3-8B@v2.*Qwen/Qwen3-8B@main"):
        pin_revisions(cfg, manifests)
    assert cfg.read_text() == PAPER_CONFIG.read_text()
