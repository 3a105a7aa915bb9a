"""Write a safetensors file one tensor at a time.

``safetensors.torch.save_file`` needs every tensor in memory at once; the SVD cache of a
large model would then grow with the model. Because every shape is known before the SVDs
run, the header can be written first and each tensor streamed after it, in order. The
result is a standard safetensors file (read back with ``safetensors.safe_open``).
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from offprincipal.io import atomic_path

_DTYPE_CODES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class StreamingWriter:
    """``write`` tensors in header order; ``metadata`` (a dict) may still change until the file
    closes when the header was given room for it (``metadata_reserve``)."""

    def __init__(self, fh, specs: Sequence[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str] | None = None):
        self._fh = fh
        self.metadata = dict(metadata or {})
        self._pending = list(specs)
        self._expected = {name: (dtype, tuple(shape)) for name, dtype, shape in specs}

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if not self._pending or self._pending[0][0] != name:
            expected = self._pending[0][0] if self._pending else "nothing"
            raise ValueError(f"tensors must be written in header order: expected {expected!r}, got {name!r}")
        dtype, shape = self._expected[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(
                f"tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, header says {dtype} {shape}"
            )
        data = tensor.detach().contiguous().cpu()
        if data.numel():
            self._fh.write(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        self._pending.pop(0)

    def finish(self) -> None:
        if self._pending:
            raise ValueError(f"{len(self._pending)} tensors declared but not written, first {self._pending[0][0]!r}")


@contextmanager
def streaming_safetensors(
    path: str | os.PathLike,
    specs: Sequence[tuple[str, torch.dtype, tuple[int, ...]]],
    metadata: dict[str, str] | None = None,
    *,
    metadata_reserve: int = 0,
) -> Iterator[StreamingWriter]:
    """Declare every ``(name, dtype, shape)`` up front, then ``write`` them in that order.

    With ``metadata_reserve`` the header is padded with that many spaces (the format allows
    whitespace after the header's JSON), and ``writer.metadata`` -- edited while writing, e.g.
    to record what the writes found -- is written into that room when the file closes."""
    header: dict[str, object] = {}
    offset = 0
    for name, dtype, shape in specs:
        if dtype not in _DTYPE_CODES:
            raise ValueError(f"unsupported dtype {dtype} for {name!r}")
        n = 1
        for d in shape:
            n *= int(d)
        nbytes = n * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _DTYPE_CODES[dtype], "shape": [int(d) for d in shape], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes

    def encode(meta: dict[str, str] | None) -> bytes:
        full = dict(header)
        if meta:
            full["__metadata__"] = {str(k): str(v) for k, v in meta.items()}
        return json.dumps(full, separators=(",", ":")).encode()

    raw = encode(metadata) + b" " * metadata_reserve
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8-byte alignment
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        writer = StreamingWriter(fh, specs, metadata)
        yield writer
        writer.finish()
        if metadata_reserve:
            final = encode(writer.metadata)
            if len(final) > len(raw):
                raise ValueError(f"{path}: metadata needs {len(final)} header bytes, {len(raw)} were reserved")
            fh.seek(8)
            fh.write(final + b" " * (len(raw) - len(final)))
