"""Disk and time a compare run will need, printed before the first byte is downloaded.

Sizes come from the files on disk (local directories, verl shards, Hub snapshots already in
the cache) or, for a Hub checkpoint not yet downloaded, from the Hub's file metadata and
safetensors headers (``HfApi.model_info(files_metadata=True)``, ``get_safetensors_metadata``:
a few small HTTP requests, no weights). Times use throughput constants measured on the
2-core machine of README's Performance section, so they are rough (±50%) and scale down with
faster disks and more cores.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from offprincipal.checkpoints.naming import classify

#: sparsity pass, cold cache, bf16 1.5B pair: 7.1 GB read and compared in 6.8 s (README)
READ_BYTES_PER_S = 7.1e9 / 6.8
#: spectral pass and pair geometry: one whole `offprincipal compare` of a 1.5B-shaped bf16
#: pair on the 2-core machine (2026-12-07, README "offprincipal compare"): spectra 174 s per
#: checkpoint and pair geometry 37 s for 28 blocks, i.e. 6.1 s and 1.1 s per block (reads
#: taken out), whose Σ m·n·min(m, n) is 7.07e10 -> seconds per unit of m·n·min(m, n)
SVD_S_PER_UNIT = 6.1 / 7.07e10
GEOMETRY_S_PER_UNIT = 1.1 / 7.07e10
#: merging verl shards: read + write at about the disk's speed
MERGE_BYTES_PER_S = 0.5e9
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass
class Inventory:
    """What a checkpoint holds, for the estimate; ``known`` False when it could not be read."""

    known: bool
    stored_bytes: int = 0  # bytes of the weights as the metric stages read them
    params: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    download_bytes: int = 0  # not yet in the HF cache
    merge_read_bytes: int = 0  # verl: shard files read by the merge
    note: str = ""

    def matrices(self, kinds) -> list[tuple[int, int]]:
        kinds = set(kinds)
        return [s for n, s in self.shapes.items() if len(s) == 2 and classify(n).kind in kinds]


def _from_checkpoint(path: str | Path) -> Inventory:
    from offprincipal.checkpoints.reader import Checkpoint

    with Checkpoint(path) as ck:
        shapes = {n: ck.shape(n) for n in ck.names()}
        stored = sum(ck.byte_span(n)[2] for n in ck.names())
    return Inventory(True, stored, sum(_numel(s) for s in shapes.values()), shapes)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def local_inventory(path: str | Path) -> Inventory:
    return _from_checkpoint(path)


def verl_inventory(actor: str | Path) -> Inventory:
    """Shapes from rank 0's state dict (memory-mapped: the DTensors' global shapes)."""
    import torch

    from offprincipal.checkpoints.verl import _load_rank, rank_files

    _, files = rank_files(Path(actor))
    state = _load_rank(files[0])
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    params = sum(_numel(s) for s in shapes.values())
    del state, torch
    return Inventory(True, 2 * params, params, shapes, merge_read_bytes=sum(f.stat().st_size for f in files),
                     note="merged to bf16")


def hub_inventory(repo: str, revision: str, cache_dir: str | os.PathLike | None) -> Inventory:
    from offprincipal.checkpoints.hub import ALLOW_PATTERNS, _cached_snapshot

    snapshot = _cached_snapshot(repo, revision, cache_dir)
    if snapshot is not None:
        try:
            inv = _from_checkpoint(snapshot)
            inv.note = "in the Hugging Face cache"
            return inv
        except Exception:  # an incomplete snapshot: the fetch will complete it
            pass
    try:
        from huggingface_hub import HfApi, get_safetensors_metadata

        info = HfApi().model_info(repo, revision=revision, files_metadata=True, timeout=10)
        files = [s for s in info.siblings if any(fnmatch.fnmatch(s.rfilename, p) for p in ALLOW_PATTERNS)]
        download = sum(s.size or 0 for s in files)
        meta = get_safetensors_metadata(repo, revision=revision)
        shapes, stored = {}, 0
        for fm in meta.files_metadata.values():
            for name, t in fm.tensors.items():
                shapes[name] = tuple(t.shape)
                stored += _numel(t.shape) * DTYPE_BYTES.get(t.dtype, 4)
        return Inventory(True, stored, sum(_numel(s) for s in shapes.values()), shapes, download_bytes=download)
    except Exception as err:  # offline, gated, no safetensors metadata, ...
        return Inventory(False, note=f"sizes unknown: the Hub did not answer ({type(err).__name__}: {str(err)[:120]})")


@dataclass
class Estimate:
    download_bytes: int
    disk_bytes: dict[str, int]  # what lands in OUT, by kind
    seconds: dict[str, float]  # by pass
    unknown: list[str]  # checkpoints whose sizes are unknown

    @property
    def total_disk(self) -> int:
        return sum(self.disk_bytes.values())

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def _cost(mats: list[tuple[int, int]]) -> float:
    return float(sum(m * n * min(m, n) for m, n in mats))


def estimate(inventories: dict[str, Inventory], base: str, finetuned: list[str], metrics: dict) -> Estimate:
    """Disk (spectra caches, masks, merged verl checkpoints) and time (per pass) of the run."""
    kinds = metrics["matrix_kinds"]
    top_k = metrics["svd_top_k"]
    item = 8 if metrics.get("svd_dtype", "float64") == "float64" else 4
    unknown = [c for c, inv in inventories.items() if not inv.known]
    disk = {"spectra caches": 0, "update masks": 0, "merged verl checkpoints": 0}
    secs = {"merge verl shards": 0.0, "sparsity pass": 0.0, "spectral pass": 0.0, "pair geometry": 0.0}
    for cid, inv in inventories.items():
        if not inv.known:
            continue
        mats = inv.matrices(kinds)
        disk["spectra caches"] += sum(item * (min(m, n) + (m + n) * min(top_k, m, n)) for m, n in mats)
        secs["spectral pass"] += SVD_S_PER_UNIT * _cost(mats) + sum(2 * m * n for m, n in mats) / READ_BYTES_PER_S
        if inv.merge_read_bytes:
            disk["merged verl checkpoints"] += inv.stored_bytes
            secs["merge verl shards"] += (inv.merge_read_bytes + inv.stored_bytes) / MERGE_BYTES_PER_S
    b = inventories[base]
    for ft in finetuned:
        f = inventories[ft]
        if not (b.known and f.known):
            continue
        disk["update masks"] += (b.params + 7) // 8
        secs["sparsity pass"] += (b.stored_bytes + f.stored_bytes) / READ_BYTES_PER_S
        mats = b.matrices(kinds)
        secs["pair geometry"] += GEOMETRY_S_PER_UNIT * _cost(mats) + sum(4 * m * n for m, n in mats) / READ_BYTES_PER_S
    download = sum(inv.download_bytes for inv in inventories.values())
    return Estimate(download, disk, secs, unknown)


def human_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def human_seconds(s: float) -> str:
    if s < 1:
        return "< 1 s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def describe(est: Estimate, cache_dir: str) -> list[str]:
    lines = ["Estimate (before anything is read or downloaded):"]
    if est.download_bytes:
        lines.append(f"  download: {human_bytes(est.download_bytes)} into the Hugging Face cache {cache_dir}")
    else:
        lines.append("  download: nothing")
    parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in est.disk_bytes.items() if v)
    lines.append(f"  disk in the output folder: {human_bytes(est.total_disk)}" + (f" ({parts})" if parts else ""))
    passes = ", ".join(f"{k} {human_seconds(v)}" for k, v in est.seconds.items() if v)
    lines.append(
        f"  time: about {human_seconds(est.total_seconds)} of compute on 2 cores" + (f" ({passes})" if passes else "")
        + (", plus the download" if est.download_bytes else "")
        + "; from throughputs measured on a 2-core machine (README, Performance)"
    )
    if est.unknown:
        lines.append(f"  not counted (sizes unknown until fetched): {', '.join(est.unknown)}")
    return lines
