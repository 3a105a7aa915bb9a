"""The four math benchmarks shipped with the package, and their integrity-checked loader.

Each benchmark is one JSON Lines file under ``offprincipal/evaluation/data/`` (copied
byte-exact from Evalchemy; see ``data/SOURCES.md``). :func:`load_rows` hashes the file and
refuses it if the sha256 differs from the recorded one, so a silently edited or truncated copy
can never be scored. A caller may point a benchmark at another file (``data_file``); then the
check uses the ``sha256`` the caller gives, or is skipped when none is given, and the digest
actually read is always returned so the result file records it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Benchmark:
    """One shipped benchmark: its file, digest, row count and field names."""

    name: str
    filename: str
    sha256: str
    rows: int
    question_field: str
    answer_field: str
    id_field: str

    @property
    def path(self) -> Path:
        return DATA_DIR / self.filename


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("aime24", "aime24.json", "2dfe4f134aee7989cd9978218ca914b3c3db4685ea06d841560ec1391ba0a409",
                  30, "problem", "expected_answer", "id"),
        Benchmark("aime25", "aime25.json", "3505b87e8597a1b96821eef78f426382b7bff86c6a4a4cf19b57b24b968adfdb",
                  30, "problem", "answer", "id"),
        Benchmark("amc23", "amc23.json", "02ae54425741562778916b5fa8f6ff07749689cfcd7a53e65e1d88a89e5065f9",
                  40, "question", "answer", "id"),
        Benchmark("math500", "math500.jsonl", "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
                  500, "problem", "answer", "unique_id"),
    )
}


class DataIntegrityError(ValueError):
    """An evaluation file whose bytes are not the recorded ones."""


def benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}") from None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_rows(name: str, data_file: str | os.PathLike | None = None,
              sha256: str | None = None) -> tuple[list[dict], dict]:
    """The rows of benchmark ``name`` and a provenance dict ``{path, sha256, rows}``.

    Without ``data_file`` the shipped file is read and must match its recorded sha256 and row
    count. With ``data_file`` the file must match ``sha256`` when one is given. Every row must
    carry the benchmark's question, answer and id fields.
    """
    bench = benchmark(name)
    path = Path(data_file) if data_file is not None else bench.path
    expected = sha256 if data_file is not None else bench.sha256
    if not path.is_file():
        raise FileNotFoundError(f"benchmark {name!r}: data file {path} does not exist")
    digest = file_sha256(path)
    if expected is not None and digest != expected:
        raise DataIntegrityError(
            f"benchmark {name!r}: {path} has sha256 {digest}, expected {expected}; the file was "
            "altered or is not the recorded copy (see offprincipal/evaluation/data/SOURCES.md)")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataIntegrityError(f"benchmark {name!r}: {path} line {lineno} is not JSON ({err})") from None
            for field in (bench.question_field, bench.answer_field, bench.id_field):
                if field not in row:
                    raise DataIntegrityError(f"benchmark {name!r}: {path} line {lineno} lacks field {field!r}")
            rows.append(row)
    if data_file is None and len(rows) != bench.rows:
        raise DataIntegrityError(f"benchmark {name!r}: {path} has {len(rows)} rows, expected {bench.rows}")
    ids = [row[bench.id_field] for row in rows]
    if len(set(map(str, ids))) != len(ids):
        raise DataIntegrityError(f"benchmark {name!r}: {path} has duplicate ids in field {bench.id_field!r}")
    return rows, {"path": str(path.resolve()), "sha256": digest, "rows": len(rows)}
