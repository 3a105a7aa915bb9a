"""Raw verl FSDP checkpoints (``global_step_N/actor``) merged into Hugging Face bf16 safetensors.

verl's ``FSDPCheckpointManager`` saves, per rank ``R`` of ``W``, the model's sharded state dict
(``model.state_dict()`` under FSDP2: one ``DTensor`` per parameter, holding the rank's local
shard) with ``torch.save`` as ``model_world_size_W_rank_R.pt``, beside ``fsdp_config.json``
(``{"FSDP_version", "world_size"}``) and a ``huggingface/`` folder with the config and
tokenizer (see ``docs/training.md``). verl's own merger (``python -m verl.model_merger merge
--backend fsdp``) is not installed in the analysis environment, so :func:`merge_fsdp_checkpoint`
does the same with torch alone, one tensor at a time:

* every rank's state dict is opened memory-mapped (``torch.load(mmap=True, weights_only=True)``);
* a ``DTensor`` with a ``Shard(d)`` placement is the concatenation along ``d`` of the local
  shards in the order of the ranks along that mesh dimension (rank order on verl's 1-D
  ``("fsdp",)`` mesh; on a ``("ddp", "fsdp")`` mesh the first replica group's ranks, as verl
  does); ``Replicate`` placements take one copy. ``Partial`` and strided (FSDP + TP) placements
  are refused, as verl's merger refuses them;
* a plain tensor takes one copy when every rank holds the same, else the ranks' copies
  concatenated on dim 0 (verl's ``merge_non_dtensor_shards``);
* every tensor is cast to bf16 (``Tensor.to``, round to nearest even), as verl's merger does;
* a tied ``lm_head.weight`` is left out when the config ties it to the embeddings, as
  ``save_pretrained`` does;
* the weights are written as ``model.safetensors`` (or ``model-0000i-of-0000n.safetensors`` +
  index above ``max_shard_bytes``), streamed tensor by tensor, and the ``huggingface/`` files
  (config with ``torch_dtype: bfloat16``, tokenizer, generation config) are copied beside them.

Everything lands in the output directory atomically.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from offprincipal.checkpoints.reader import INDEX_NAME, CheckpointError, _natural_key, release_pages
from offprincipal.io import atomic_dir, write_json
from offprincipal.progress import pass_progress
from offprincipal.tensorfile import streaming_safetensors

log = logging.getLogger(__name__)

SHARD_RE = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")
STEP_RE = re.compile(r"^global_steps?_(\d+)$")
HF_DIR = "huggingface"
MAX_SHARD_BYTES = 5 * 10**9  # save_pretrained's former default; any size reads the same


def actor_dir_of(path: str | Path) -> Path:
    """The ``actor`` directory of a verl checkpoint given as ``global_step_N/actor`` or
    ``global_step_N``; raises :class:`CheckpointError` when ``path`` is neither."""
    p = Path(path).expanduser().absolute()
    for candidate in (p, p / "actor"):
        if candidate.is_dir() and any(SHARD_RE.match(f.name) for f in candidate.iterdir()):
            return candidate
    raise CheckpointError(
        f"{p} is not a verl FSDP checkpoint: no model_world_size_W_rank_R.pt files in it"
        + (" or in its actor/ folder" if p.is_dir() else " (no such directory)")
    )


def is_verl_checkpoint(path: str | Path) -> bool:
    try:
        actor_dir_of(path)
    except CheckpointError:
        return False
    return True


def step_of(actor_dir: Path) -> int | None:
    """N of ``.../global_step_N/actor`` (None when the folder is not named that way)."""
    for part in (actor_dir.name, actor_dir.parent.name):
        m = STEP_RE.match(part)
        if m:
            return int(m.group(1))
    return None


def rank_files(actor_dir: Path) -> tuple[int, list[Path]]:
    """(world size, the W model shard files in rank order), checked to be complete."""
    found: dict[int, dict[int, Path]] = {}
    for f in actor_dir.iterdir():
        m = SHARD_RE.match(f.name)
        if m:
            found.setdefault(int(m.group(1)), {})[int(m.group(2))] = f
    cfg = actor_dir / "fsdp_config.json"
    world = None
    if cfg.is_file():
        try:
            world = int(json.loads(cfg.read_text())["world_size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"verl checkpoint {actor_dir}: cannot read world_size from {cfg.name}: {exc!r}") from exc
    if world is None:
        if len(found) != 1:
            raise CheckpointError(
                f"verl checkpoint {actor_dir}: shards of several world sizes {sorted(found)} and no fsdp_config.json"
            )
        world = next(iter(found))
    ranks = found.get(world, {})
    missing = [f"model_world_size_{world}_rank_{r}.pt" for r in range(world) if r not in ranks]
    if missing:
        raise CheckpointError(
            f"verl checkpoint {actor_dir}: world size {world} but shard file(s) {', '.join(missing)} are missing"
        )
    return world, [ranks[r] for r in range(world)]


@contextmanager
def _quiet_mesh_warning() -> Iterator[None]:
    """torch warns on every DeviceMesh unpickled without a process group; none is needed here."""
    logger = logging.getLogger("torch.distributed.device_mesh")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_rank(path: Path) -> dict:
    import torch.distributed.tensor  # noqa: F401  -- registers DTensor for weights_only loading

    try:
        with _quiet_mesh_warning():
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"verl checkpoint shard {path}: cannot be read as a torch state dict (corrupted?): {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"verl checkpoint shard {path}: holds a {type(state).__name__}, not a state dict")
    return state


def _local(t) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t._local_tensor if isinstance(t, DTensor) else t


def _shard_plan(key: str, t, world: int) -> tuple[list[int], int | None]:
    """(ranks whose local pieces make up ``key``, in order; the concatenation dim or None for
    one replicated copy) from a DTensor's mesh and placements."""
    from torch.distributed.tensor import Replicate, Shard

    mesh = t.device_mesh.mesh
    if mesh.numel() != world:
        raise CheckpointError(f"tensor {key!r}: device mesh of {mesh.numel()} ranks, checkpoint world size {world}")
    shard_dims = []
    for mesh_dim, p in enumerate(t.placements):
        if type(p) is Shard:
            shard_dims.append((mesh_dim, p.dim))
        elif not isinstance(p, Replicate):
            raise CheckpointError(
                f"tensor {key!r}: placement {p} is not supported (only Shard and Replicate, as verl's merger)"
            )
    if len(shard_dims) > 1:
        raise CheckpointError(f"tensor {key!r}: sharded on {len(shard_dims)} mesh dimensions (FSDP + TP is not supported)")
    index = [0] * mesh.ndim  # replicated mesh dims: the first copy
    if not shard_dims:
        return [int(mesh[tuple(index)])], None
    mesh_dim, dim = shard_dims[0]
    ranks = []
    for i in range(mesh.shape[mesh_dim]):
        index[mesh_dim] = i
        ranks.append(int(mesh[tuple(index)]))
    return ranks, dim


def _merge(key: str, per_rank: list, world: int) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    first = per_rank[0]
    if isinstance(first, DTensor):
        ranks, dim = _shard_plan(key, first, world)
        pieces = [_local(per_rank[r]) for r in ranks]
        merged = pieces[0] if dim is None else torch.cat(pieces, dim=dim)
        if tuple(merged.shape) != tuple(first.shape):
            raise CheckpointError(
                f"tensor {key!r}: shards concatenate to {list(merged.shape)}, the DTensor's global shape is {list(first.shape)}"
            )
        return merged
    if not isinstance(first, torch.Tensor):
        raise CheckpointError(f"entry {key!r} is a {type(first).__name__}, not a tensor (FSDP1 ShardedTensor checkpoints are not supported)")
    if all(torch.equal(first, t) for t in per_rank[1:]):
        return first
    return torch.cat(per_rank, dim=0)


def _tied(hf_dir: Path, config: dict) -> bool:
    """Whether the model ties lm_head to the embeddings, as transformers reads the config."""
    try:
        from transformers import AutoConfig

        return bool(getattr(AutoConfig.from_pretrained(str(hf_dir)), "tie_word_embeddings", False))
    except Exception:  # an architecture transformers does not know: the file's word
        return bool(config.get("tie_word_embeddings", False))


def _plan_files(names: list[str], nbytes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for n in names:
        if shards[-1] and size + nbytes[n] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(n)
        size += nbytes[n]
    return shards


def merge_fsdp_checkpoint(
    path: str | Path, out_dir: str | Path, *, max_shard_bytes: int = MAX_SHARD_BYTES, label: str | None = None
) -> dict:
    """Merge the verl checkpoint at ``path`` (``global_step_N/actor`` or ``global_step_N``) into a
    bf16 Hugging Face checkpoint at ``out_dir``; return a description (world size, step, tensors,
    files). Errors name the checkpoint and the shard or tensor."""
    actor = actor_dir_of(path)
    who = label or str(actor)
    hf_dir = actor / HF_DIR
    if not (hf_dir / "config.json").is_file():
        raise CheckpointError(f"verl checkpoint {who}: no {HF_DIR}/config.json in {actor} (verl writes it on rank 0)")
    config = json.loads((hf_dir / "config.json").read_text())
    world, files = rank_files(actor)
    states = [_load_rank(f) for f in files]
    keys = list(states[0])
    for f, st in zip(files[1:], states[1:]):
        if set(st) != set(keys):
            diff = sorted(set(st) ^ set(keys))
            raise CheckpointError(f"verl checkpoint {who}: {f.name} and {files[0].name} hold different tensors, e.g. {diff[:3]}")
    names = sorted(keys, key=_natural_key)
    tied = _tied(hf_dir, config)
    embed = next((n for n in names if n.endswith("embed_tokens.weight")), None)
    if tied and "lm_head.weight" in names and embed is not None:
        names.remove("lm_head.weight")  # save_pretrained drops the tied copy
    shapes = {n: tuple(states[0][n].shape) for n in names}
    nbytes = {n: 2 * _numel(shapes[n]) for n in names}  # bf16
    plan = _plan_files(names, nbytes, max_shard_bytes)
    fnames = (
        ["model.safetensors"] if len(plan) == 1
        else [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
    )
    read_total = sum(f.stat().st_size for f in files)
    with atomic_dir(out_dir) as tmp, pass_progress(f"merge verl {who}", tensors=len(names), total_bytes=read_total) as progress:
        for fname, shard in zip(fnames, plan):
            specs = [(n, torch.bfloat16, shapes[n]) for n in shard]
            with streaming_safetensors(tmp / fname, specs, {"format": "pt"}) as writer:
                for n in shard:
                    per_rank = [st[n] for st in states]
                    try:
                        merged = _merge(n, per_rank, world)
                    except CheckpointError as exc:
                        raise CheckpointError(f"verl checkpoint {who}: {exc}") from None
                    writer.write(n, merged.to(torch.bfloat16).contiguous())
                    read = sum(_local(t).numel() * _local(t).element_size() for t in per_rank)
                    release_pages(*(_local(t) for t in per_rank if _local(t).is_contiguous()))
                    progress.advance(read)
        if len(plan) > 1:
            weight_map = {n: fname for fname, shard in zip(fnames, plan) for n in shard}
            write_json(tmp / INDEX_NAME, {"metadata": {"total_size": sum(nbytes.values())}, "weight_map": weight_map})
        _copy_hf_files(hf_dir, tmp)
    return {
        "actor_dir": str(actor),
        "step": step_of(actor),
        "world_size": world,
        "tensors": len(names),
        "files": fnames,
        "tied_lm_head_dropped": tied and "lm_head.weight" in keys,
    }


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _copy_hf_files(hf_dir: Path, out: Path) -> None:
    """Config, tokenizer and generation config from ``huggingface/``; never its weights (a
    ``hf_model`` save puts fp32 weights there; the merged ones are the shards')."""
    for f in sorted(hf_dir.iterdir()):
        if not f.is_file() or f.suffix in {".safetensors", ".bin", ".pt"} or f.name.endswith(".index.json"):
            continue
        if f.name == "config.json":
            config = json.loads(f.read_text())
            config["torch_dtype"] = "bfloat16"  # what the merged weights are, as verl's merger writes
            if "dtype" in config:  # transformers >= 5 spelling
                config["dtype"] = "bfloat16"
            (out / f.name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copy2(f, out / f.name)


def build_verl_checkpoint(name: str, path: str | Path, out_dir: str | Path, *, manifest: str | Path | None = None) -> dict:
    """Merge a verl checkpoint into ``out_dir`` and write its manifest (``source: verl``), with
    the merged files' header fingerprint (:mod:`offprincipal.checkpoints.local`)."""
    from offprincipal.checkpoints.local import describe_checkpoint

    merged = merge_fsdp_checkpoint(path, out_dir, label=name)
    record = {"source": "verl", **describe_checkpoint(name, out_dir), **{f"verl_{k}": v for k, v in merged.items() if k != "files"}}
    if manifest is not None:
        write_json(manifest, record)
    return record


def watched_files(path: str | Path) -> list[str]:
    """The files a merge reads (model shards, fsdp_config.json, huggingface/*), for the
    workflow to rerun the merge when one changes; none when ``path`` is not a verl checkpoint."""
    try:
        actor = actor_dir_of(path)
    except CheckpointError:
        return []
    found = [f for f in actor.iterdir() if SHARD_RE.match(f.name) or f.name == "fsdp_config.json"]
    if (actor / HF_DIR).is_dir():
        found += [f for f in (actor / HF_DIR).iterdir() if f.is_file()]
    return sorted(str(f) for f in found)
