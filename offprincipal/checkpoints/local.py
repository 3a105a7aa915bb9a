"""Checkpoints already on disk: a directory in Hugging Face layout, used where it lies.

:func:`register_local_checkpoint` checks that the directory is a readable checkpoint (a
``config.json`` and safetensors weights, single-file or sharded with an index whose every
shard is present and parses) and writes a manifest of the same shape as a Hub download's,
with ``source: local`` and a **fingerprint** in place of a commit.

The fingerprint is the SHA-256 of the weight files' safetensors *headers* (each file's name
and header bytes, in name order), not of the data: it is read in milliseconds from any
checkpoint size and changes when a tensor is added, renamed, reshaped or re-typed, or when a
file's metadata changes, but **not** when weights change in place with the same layout --
two checkpoints of one training run share it. It identifies a layout, not a model; the
manifest therefore also records each file's size and modification time, and the workflow
re-registers the checkpoint (and recomputes everything after it) whenever a file is newer
than the manifest.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from offprincipal.checkpoints.reader import INDEX_NAME, Checkpoint, CheckpointError
from offprincipal.io import write_json

#: files of a Hugging Face checkpoint directory the workflow watches besides the weights
CONFIG_FILES = ("config.json", "generation_config.json", INDEX_NAME)

_MAX_HEADER = 100_000_000  # safetensors' own limit on a header's size


def header_fingerprint(directory: str | os.PathLike, files: list[str]) -> str:
    """``sha256:<hex>`` of the safetensors headers of ``files`` (names relative to ``directory``)."""
    digest = hashlib.sha256()
    for fname in sorted(files):
        path = Path(directory) / fname
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"checkpoint {directory}: {fname} is too short to be a safetensors file")
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER:
                raise CheckpointError(f"checkpoint {directory}: {fname} declares a {length}-byte header (corrupted file)")
            header = fh.read(length)
        digest.update(fname.encode() + b"\0" + struct.pack("<Q", length) + header)
    return "sha256:" + digest.hexdigest()


def watched_files(directory: str | os.PathLike) -> list[str]:
    """Paths the workflow treats as the inputs of a local checkpoint: its config files and
    safetensors files that exist now (none if the directory does not exist)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [d / f for f in CONFIG_FILES if (d / f).is_file()]
    found += sorted(p for p in d.glob("*.safetensors") if p.is_file())
    return [str(p) for p in found]


def describe_checkpoint(name: str, directory: str | os.PathLike) -> dict:
    """Open ``directory`` as a checkpoint and describe it: label, files, sizes, fingerprint.

    Raises :class:`CheckpointError` naming ``name`` and the problem: no such directory, not a
    Hugging Face checkpoint (no config.json, no safetensors), a shard the index names that is
    absent, a file that does not parse as safetensors."""
    d = Path(directory).expanduser().absolute()
    if not d.is_dir():
        raise CheckpointError(f"checkpoint {name!r}: {d} is not a directory")
    if not (d / "config.json").is_file():
        raise CheckpointError(
            f"checkpoint {name!r}: {d} is not a Hugging Face checkpoint directory (no config.json"
            + ("; it looks like a verl global_step_N/actor directory -- pass that directory as is)"
               if any(d.glob("model_world_size_*_rank_*.pt")) else ")")
        )
    with Checkpoint(d, label=name) as ckpt:
        files = ckpt.files()
        n_tensors = len(ckpt)
        config = ckpt.config
    sizes = {f: (d / f).stat().st_size for f in files}
    return {
        "name": name,
        "path": str(d),
        "files": files,
        "file_bytes": sizes,
        "file_mtime_ns": {f: (d / f).stat().st_mtime_ns for f in files},
        "bytes": sum(sizes.values()),
        "tensors": n_tensors,
        "architectures": config.get("architectures"),
        "model_type": config.get("model_type"),
        "fingerprint": header_fingerprint(d, files),
    }


def register_local_checkpoint(name: str, directory: str | os.PathLike, *, manifest: str | os.PathLike | None = None) -> dict:
    """Check a local checkpoint directory and (optionally) write its manifest atomically."""
    record = {"source": "local", **describe_checkpoint(name, directory)}
    if manifest is not None:
        write_json(manifest, record)
    return record
