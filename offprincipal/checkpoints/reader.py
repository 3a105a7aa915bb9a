"""Stream tensors one at a time from a (sharded) Hugging Face safetensors checkpoint.

:class:`Checkpoint` reads only the safetensors *headers* when it is built and keeps one
open handle per shard; :meth:`Checkpoint.load` materialises a single tensor.  Nothing
here builds a model or calls ``from_pretrained``.  ``safetensors`` (0.8) memory-maps the
file privately (copy-on-write), so a loaded tensor costs only the pages it touches and
in-place edits never reach the file.

Fused MoE layout
----------------
transformers >= 5 holds Qwen3-MoE (and the other ``qwen2_moe``-mapped families) experts as
two 3-D parameters per layer::

    model.layers.L.mlp.experts.gate_up_proj   [E, 2*I, H]   gate = [:, :I, :], up = [:, I:, :]
    model.layers.L.mlp.experts.down_proj      [E, H, I]

(``Qwen3MoeExperts`` in transformers 5.23: ``linear(x, gate_up_proj[e]).chunk(2, dim=-1)``
gives ``gate, up``; ``conversion_mapping.py`` builds it by stacking the per-expert
``gate_proj``/``up_proj`` weights on dim 0 and concatenating them on dim 1.)
``save_pretrained`` in 5.23 reverts that conversion by default and writes per-expert
keys ``model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight``; with
``save_original_format=False`` (and in files written by other v5 tools) the fused
tensors land on disk, without a ``.weight`` suffix -- this reader accepts both spellings.
A fused tensor is exposed under the per-expert names, so pairs saved in different
layouts align; loading one expert reads only that slice (``get_slice``).  When a layer
has both fused tensors their shapes must agree with the convention above (``[E, 2I, H]``
and ``[E, H, I]``); other fused conventions (e.g. gpt-oss's interleaved ``[E, H, 2I]``)
are refused with :class:`CheckpointError` rather than split wrongly.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import re
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from safetensors import safe_open

from offprincipal.checkpoints.naming import TensorInfo, classify

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatch",
    "TensorPair",
    "iter_pairs",
    "pair_names",
    "release_pages",
]

INDEX_NAME = "model.safetensors.index.json"
LM_HEAD = "lm_head.weight"

_DTYPES: dict[str, torch.dtype] = {
    name: dt
    for name, dt in {
        "BOOL": torch.bool,
        "U8": torch.uint8,
        "I8": torch.int8,
        "I16": torch.int16,
        "U16": getattr(torch, "uint16", None),
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I32": torch.int32,
        "U32": getattr(torch, "uint32", None),
        "F32": torch.float32,
        "F64": torch.float64,
        "I64": torch.int64,
        "U64": getattr(torch, "uint64", None),
        "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
        "F8_E5M2": getattr(torch, "float8_e5m2", None),
        "F8_E8M0": getattr(torch, "float8_e8m0fnu", None),
        "C64": torch.complex64,
    }.items()
    if dt is not None
}

_FUSED_RE = re.compile(r"^(?P<prefix>.*\.experts)\.(?P<which>gate_up_proj|down_proj)(?:\.weight)?$")


class CheckpointError(ValueError):
    """A checkpoint cannot be read; the message names the checkpoint and the file/tensor."""


class CheckpointMismatch(CheckpointError):
    """The two sides of a pair disagree on tensor names or shapes."""


@dataclass(frozen=True)
class _Source:
    """Where a logical tensor lives: stored key in a shard, optionally one slice of it."""

    file: str  # shard file name, relative to the checkpoint directory
    key: str  # the stored tensor name
    shape: tuple[int, ...]  # logical shape
    dtype: str  # safetensors dtype string ("BF16", "F32", ...)
    expert: int | None = None  # fused layout: expert index along dim 0
    rows: tuple[int, int] | None = None  # fused gate_up: row range along dim 1


def _natural_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


class Checkpoint:
    """One HF-layout checkpoint directory, read tensor by tensor.

    Attributes: ``path`` (directory), ``label`` (``label`` or the directory name),
    ``config`` (``config.json`` contents, ``{}`` if absent), ``tied_embeddings``
    (``config["tie_word_embeddings"]`` -- also looked up in ``text_config`` -- defaulting
    to False, and True whenever ``lm_head.weight`` is missing while ``embed_tokens`` is on
    disk).
    """

    def __init__(self, path: str | os.PathLike, *, label: str | None = None):
        self.path = Path(path)
        self.label = label if label is not None else (self.path.name or str(self.path))
        self._handles: dict[str, object] = {}
        self._headers: dict[str, tuple[int, dict]] = {}  # shard -> (data start, header), read lazily
        self._sources: dict[str, _Source] = {}
        self._names: list[str] = []
        self._files: list[str] = []
        if not self.path.is_dir():
            raise CheckpointError(f"checkpoint {self._who()}: directory {self.path} does not exist")
        try:
            self.config = self._read_config()
            self._open()
        except BaseException:
            self.close()
            raise
        self.embed_name = next((n for n in self._names if n.endswith("embed_tokens.weight")), None)
        self.lm_head_name = LM_HEAD if LM_HEAD in self._sources else None
        tie = self.config.get("tie_word_embeddings")
        if tie is None and isinstance(self.config.get("text_config"), dict):
            tie = self.config["text_config"].get("tie_word_embeddings")
        self.tied_embeddings = bool(tie) or (self.lm_head_name is None and self.embed_name is not None)

    # ------------------------------------------------------------------ construction
    def _who(self) -> str:
        return f"{self.label!r} ({self.path})" if self.label != self.path.name else f"{self.path}"

    def _read_config(self) -> dict:
        cfg = self.path / "config.json"
        if not cfg.is_file():
            return {}
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {self._who()}: cannot read {cfg.name}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint {self._who()}: {cfg.name} is not a JSON object")
        return data

    def _index_file(self) -> Path | None:
        index = self.path / INDEX_NAME
        if index.is_file():
            return index
        others = sorted(self.path.glob("*.safetensors.index.json"))
        return others[0] if len(others) == 1 else None

    def _open_shard(self, fname: str, tensor: str | None = None) -> object:
        handle = self._handles.get(fname)
        if handle is not None:
            return handle
        fpath = self.path / fname
        where = f" (holding tensor {tensor!r})" if tensor else ""
        if not fpath.is_file():
            raise CheckpointError(f"checkpoint {self._who()}: shard file {fname}{where} is missing")
        try:
            handle = safe_open(str(fpath), framework="pt", device="cpu")
        except Exception as exc:  # SafetensorError, OSError, ...
            raise CheckpointError(
                f"checkpoint {self._who()}: corrupted safetensors file {fname}{where}: {exc}"
            ) from exc
        self._handles[fname] = handle
        return handle

    def _open(self) -> None:
        index = self._index_file()
        stored: dict[str, str] = {}  # stored key -> shard file
        if index is not None:
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError("weight_map is not an object")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(
                    f"checkpoint {self._who()}: cannot read index {index.name}: {exc!r}"
                ) from exc
            for key, fname in weight_map.items():
                stored[key] = str(fname)
                self._open_shard(str(fname), key)
            for fname in sorted(set(stored.values())):
                keys = set(self._handles[fname].keys())
                missing = [k for k, f in stored.items() if f == fname and k not in keys]
                if missing:
                    raise CheckpointError(
                        f"checkpoint {self._who()}: index {index.name} places tensor {missing[0]!r}"
                        f" in {fname}, which does not contain it"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    )
        else:
            files = sorted(p.name for p in self.path.glob("*.safetensors") if p.is_file())
            if not files:
                raise CheckpointError(f"checkpoint {self._who()}: no *.safetensors files in {self.path}")
            for fname in files:
                for key in self._open_shard(fname).keys():
                    if key in stored:
                        raise CheckpointError(
                            f"checkpoint {self._who()}: tensor {key!r} is stored in both"
                            f" {stored[key]} and {fname}"
                        )
                    stored[key] = fname

        self._files = sorted(set(stored.values()))
        fused: dict[str, dict[str, _Source]] = {}
        for key, fname in stored.items():
            try:
                sl = self._handles[fname].get_slice(key)
                shape = tuple(int(s) for s in sl.get_shape())
                dtype = str(sl.get_dtype())
            except Exception as exc:
                raise CheckpointError(
                    f"checkpoint {self._who()}: cannot read header of tensor {key!r} in {fname}: {exc}"
                ) from exc
            src = _Source(fname, key, shape, dtype)
            m = _FUSED_RE.match(key)
            if m is not None and len(shape) == 3:
                fused.setdefault(m.group("prefix"), {})[m.group("which")] = src
            else:
                self._add(key, src)
        for prefix, parts in fused.items():
            self._expand_fused(prefix, parts)
        self._names = sorted(self._sources, key=_natural_key)

    def _add(self, name: str, src: _Source) -> None:
        if name in self._sources:
            raise CheckpointError(
                f"checkpoint {self._who()}: tensor {name!r} appears both per-expert and in a fused"
                f" MoE tensor ({src.key} in {src.file})"
            )
        self._sources[name] = src

    def _expand_fused(self, prefix: str, parts: dict[str, _Source]) -> None:
        gu, dn = parts.get("gate_up_proj"), parts.get("down_proj")
        if gu is not None:
            n_exp, two_i, hidden = gu.shape
            ok = two_i % 2 == 0
            if dn is not None:
                ok = ok and dn.shape == (n_exp, hidden, two_i // 2)
            if not ok:
                raise CheckpointError(
                    f"checkpoint {self._who()}: fused MoE tensors {gu.key} {list(gu.shape)}"
                    + (f" and {dn.key} {list(dn.shape)}" if dn is not None else "")
                    + " do not follow the [E, 2I, H] / [E, H, I] layout this reader supports"
                )
            inter = two_i // 2
            for e in range(n_exp):
                for proj, rows in (("gate", (0, inter)), ("up", (inter, two_i))):
                    self._add(
                        f"{prefix}.{e}.{proj}_proj.weight",
                        _Source(gu.file, gu.key, (inter, hidden), gu.dtype, e, rows),
                    )
        if dn is not None:
            n_exp, hidden, inter = dn.shape
            for e in range(n_exp):
                self._add(
                    f"{prefix}.{e}.down_proj.weight",
                    _Source(dn.file, dn.key, (hidden, inter), dn.dtype, e, None),
                )

    # ------------------------------------------------------------------ queries
    def _source(self, name: str) -> _Source:
        try:
            return self._sources[name]
        except KeyError:
            raise CheckpointError(f"checkpoint {self._who()}: no tensor named {name!r}") from None

    def names(self) -> list[str]:
        """Logical tensor names, in natural (layer-numeric) order."""
        return list(self._names)

    def files(self) -> list[str]:
        """The safetensors files this checkpoint reads (relative to ``path``), sorted."""
        return list(self._files)

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __len__(self) -> int:
        return len(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._source(name).shape

    def dtype(self, name: str) -> torch.dtype:
        """The stored dtype (of the fused tensor, for a per-expert view of one)."""
        src = self._source(name)
        try:
            return _DTYPES[src.dtype]
        except KeyError:
            raise CheckpointError(
                f"checkpoint {self._who()}: tensor {name!r} in {src.file} has unsupported dtype {src.dtype}"
            ) from None

    def info(self, name: str) -> TensorInfo:
        self._source(name)
        return classify(name)

    def stored_key(self, name: str) -> str:
        """The key on disk behind a logical name (differs only for fused MoE experts)."""
        return self._source(name).key

    def load(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """Read ONE tensor in its stored dtype (a fused expert reads only its slice)."""
        src = self._source(name)
        handle = self._handles.get(src.file)
        if handle is None:
            raise CheckpointError(f"checkpoint {self._who()}: closed (reading {name!r})")
        try:
            if src.expert is None:
                t = handle.get_tensor(src.key)
            elif src.rows is None:
                t = handle.get_slice(src.key)[src.expert]
            else:
                t = handle.get_slice(src.key)[src.expert, src.rows[0] : src.rows[1]]
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {self._who()}: cannot read tensor {src.key!r} from {src.file}: {exc}"
            ) from exc
        if tuple(t.shape) != src.shape:  # defensive: header and data disagree
            raise CheckpointError(
                f"checkpoint {self._who()}: tensor {name!r} in {src.file} read as {tuple(t.shape)},"
                f" header says {src.shape}"
            )
        if torch.device(device) != t.device:
            t = t.to(device)
        return t

    def byte_span(self, name: str) -> tuple[Path, int, int]:
        """(file, offset, length) of the bytes that hold ``name`` on disk. A fused MoE expert
        is a contiguous slice of its fused tensor: ``[E, A, B]`` row-major, one expert's
        ``A × B`` block, or rows ``r0:r1`` of it for gate/up."""
        src = self._source(name)
        if src.file not in self._headers:
            with open(self.path / src.file, "rb") as fh:  # the safetensors layout: u64 length, JSON
                (length,) = struct.unpack("<Q", fh.read(8))
                self._headers[src.file] = (8 + length, json.loads(fh.read(length)))
        data_start, header = self._headers[src.file]
        begin, end = header[src.key]["data_offsets"]
        if src.expert is None:
            return self.path / src.file, data_start + begin, end - begin
        experts, rows, cols = header[src.key]["shape"]
        itemsize = (end - begin) // (experts * rows * cols)
        first, last = src.rows if src.rows is not None else (0, rows)
        offset = (src.expert * rows + first) * cols * itemsize
        return self.path / src.file, data_start + begin + offset, (last - first) * cols * itemsize

    def prefetch(self, name: str) -> None:
        """Ask the OS to start reading ``name``'s bytes into the page cache and return
        (``posix_fadvise(WILLNEED)``): the disk then reads the next tensor while the caller
        computes on this one. A no-op where the OS has no fadvise."""
        if not hasattr(os, "posix_fadvise"):
            return
        path, offset, length = self.byte_span(name)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        handles, self._handles = self._handles, {}
        for h in handles.values():
            try:
                h.__exit__(None, None, None)
            except Exception:
                pass

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, label={self.label!r}, tensors={len(self._names)})"


_PAGE = mmap.PAGESIZE
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def release_pages(*tensors: torch.Tensor) -> None:
    """Give the resident pages of CPU tensors the caller is done with back to the OS.

    A tensor read from a memory-mapped shard keeps every page it touched resident (counted
    in the process's RSS) until the shard is closed, so a pass over a whole model would show
    the model's size as RSS, and schedulers that police RSS would kill the job. This calls
    ``madvise(MADV_DONTNEED)`` on the whole pages inside each tensor's own bytes: a
    file-backed page is read again from the page cache if touched later, an anonymous one
    reads as zeros, so **the tensors must not be used afterwards**. Linux only; a no-op
    elsewhere and for GPU tensors.
    """
    if _LIBC is None:
        return
    for t in tensors:
        if t.device.type != "cpu" or not t.is_contiguous() or t.numel() == 0:
            continue
        start = t.data_ptr()
        first = -(-start // _PAGE) * _PAGE  # round inward: never touch a neighbour's page
        last = (start + t.numel() * t.element_size()) // _PAGE * _PAGE
        if last > first and _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), mmap.MADV_DONTNEED):
            err = ctypes.get_errno()
            raise OSError(err, f"madvise(MADV_DONTNEED) failed: {os.strerror(err)}")


@dataclass
class TensorPair:
    info: TensorInfo
    base: torch.Tensor  # cast to the requested dtype (bf16 by default)
    ft: torch.Tensor
    base_dtype: torch.dtype  # stored dtypes, before the cast
    ft_dtype: torch.dtype
    note: str = ""

    @property
    def name(self) -> str:
        return self.info.name


def _plan(base: Checkpoint, ft: Checkpoint) -> list[tuple[str, str, str, str]]:
    """(logical name, base-side name, ft-side name, note), validated, in natural order."""
    b_names, f_names = set(base.names()), set(ft.names())
    rows: dict[str, tuple[str, str, str]] = {n: (n, n, "") for n in b_names & f_names}

    # a tied side has no lm_head on disk: compare the other side's lm_head with its embed_tokens
    if LM_HEAD in f_names and LM_HEAD not in b_names and base.embed_name is not None:
        rows[LM_HEAD] = (base.embed_name, LM_HEAD, f"lm_head compared against base's tied {base.embed_name}")
        b_names.add(LM_HEAD)
    elif LM_HEAD in b_names and LM_HEAD not in f_names and ft.embed_name is not None:
        rows[LM_HEAD] = (LM_HEAD, ft.embed_name, f"lm_head compared against ft's tied {ft.embed_name}")
        f_names.add(LM_HEAD)

    only_b = sorted(b_names - f_names, key=_natural_key)
    only_f = sorted(f_names - b_names, key=_natural_key)
    if only_b or only_f:
        parts = []
        for only, lacking in ((only_b, f"ft {ft.label!r}"), (only_f, f"base {base.label!r}")):
            if only:
                shown = ", ".join(repr(n) for n in only[:5])
                more = f" (+{len(only) - 5} more)" if len(only) > 5 else ""
                parts.append(f"{lacking} lacks {len(only)} tensor(s): {shown}{more}")
        raise CheckpointMismatch(
            f"checkpoints {base.label!r} (base, {base.path}) and {ft.label!r} (ft, {ft.path}) differ in"
            f" tensor names: " + "; ".join(parts)
        )

    out = []
    bad = []
    for logical in sorted(rows, key=_natural_key):
        bn, fn, note = rows[logical]
        bs, fs = base.shape(bn), ft.shape(fn)
        if bs != fs:
            bad.append((logical, bn, bs, fn, fs))
        out.append((logical, bn, fn, note))
    if bad:
        logical, bn, bs, fn, fs = bad[0]
        more = f" (and {len(bad) - 1} more tensor(s) with different shapes)" if len(bad) > 1 else ""
        raise CheckpointMismatch(
            f"tensor {logical!r} has shape {list(bs)} in base {base.label!r} ({bn})"
            f" but {list(fs)} in ft {ft.label!r} ({fn}){more}"
        )
    return out


def pair_names(base: Checkpoint, ft: Checkpoint) -> list[tuple[str, str, str]]:
    """Validated ``(logical name, base-side name, ft-side name)`` triples, natural order.

    Raises :class:`CheckpointMismatch` if a tensor exists on one side only (a missing
    ``lm_head.weight`` on a tied side is paired with that side's ``embed_tokens``) or if
    shapes differ.
    """
    return [(n, b, f) for n, b, f, _ in _plan(base, ft)]


def iter_pairs(
    base: Checkpoint,
    ft: Checkpoint,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    names: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    readahead: bool = True,
) -> Iterator[TensorPair]:
    """Yield aligned tensor pairs one at a time, cast to ``dtype`` (``None``: stored dtypes).

    With ``readahead`` a background thread asks the OS for the next pair's bytes
    (:meth:`Checkpoint.prefetch`) while the caller works on the current one, so reading
    from a cold disk overlaps with computing.

    The pair is validated (names, shapes) when this is called, before the first tensor is
    read. ``names`` restricts (and orders) the logical names; an unknown name raises
    :class:`CheckpointError`. The cast is ``Tensor.to`` (round-to-nearest-even), fused with
    the move to ``device``; a tensor already in ``dtype`` on ``device`` is not copied.
    """
    plan = _plan(base, ft)
    if names is not None:
        by_name = {row[0]: row for row in plan}
        wanted = list(names)
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise CheckpointError(f"tensor(s) {unknown[:5]} not in the pair {base.label!r} / {ft.label!r}")
        plan = [by_name[n] for n in wanted]
    dev = torch.device(device)
    return _generate(base, ft, plan, dtype, dev, readahead)


def _prefetch(items: tuple[tuple[Checkpoint, str], ...]) -> None:
    for ckpt, name in items:
        ckpt.prefetch(name)


@contextmanager
def readahead(enabled: bool = True) -> Iterator[Callable[..., None]]:
    """``ask((checkpoint, name), ...)``: a background thread asks the OS for those tensors'
    bytes (:meth:`Checkpoint.prefetch`) while the caller computes, so a pass reading a cold
    disk overlaps reading with computing. Best effort: a failed prefetch is not reported, the
    load of that tensor reports it. Leaving the block waits for the thread, so no fadvise
    reaches a closed checkpoint. ``enabled`` False: ``ask`` does nothing."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="readahead") if enabled else None

    def ask(*items: tuple[Checkpoint, str]) -> None:
        if pool is not None:
            pool.submit(_prefetch, items)

    try:
        yield ask
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _generate(base, ft, plan, dtype, dev, readahead_on) -> Iterator[TensorPair]:
    with readahead(readahead_on) as ask:
        for i, (logical, bn, fn, note) in enumerate(plan):
            if i + 1 < len(plan):
                ask((base, plan[i + 1][1]), (ft, plan[i + 1][2]))
            b, f = base.load(bn), ft.load(fn)
            b_dtype, f_dtype = b.dtype, f.dtype
            b = b.to(device=dev, dtype=dtype if dtype is not None else b_dtype)
            f = f.to(device=dev, dtype=dtype if dtype is not None else f_dtype)
            yield TensorPair(classify(logical), b, f, b_dtype, f_dtype, note)
