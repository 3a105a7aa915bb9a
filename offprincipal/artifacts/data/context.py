"""What every renderer gets, and the checked readers of its input files.

Every renderer reads its numbers from the files the workflow hands it; the readers here raise
:class:`ArtifactInputError` -- naming the artifact, the file and what is missing -- instead of
rendering anything from an incomplete input.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from offprincipal.artifacts.catalogue import ARTIFACTS

SYNTHETIC_NOTE = "synthetic stand-ins (not trained models)"


class ArtifactInputError(ValueError):
    """An artifact's input file is missing, empty or lacks what the artifact needs."""


@dataclass
class Context:
    """Everything a renderer gets: the artifact's name, its input files and its params."""

    name: str
    inputs: dict[str, list[str]]
    spec: dict
    pairs: dict[str, dict]
    synthetic: bool
    config_name: str
    metrics: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return ARTIFACTS[self.name].title

    @property
    def pair_ids(self) -> list[str]:
        ids = list(self.spec.get("pairs") or [])
        if not ids:
            raise ArtifactInputError(f"{self.name}: the artifact's spec lists no pairs")
        for pid in ids:
            if pid not in self.pairs:
                raise ArtifactInputError(f"{self.name}: pair {pid!r} of the spec has no entry in `pairs`")
        return ids

    def files(self, key: str, *, per_pair: bool = True) -> list[str]:
        """Input files under ``key``; per pair, one file for each pair of the spec, in order."""
        if key not in self.inputs:
            raise ArtifactInputError(f"{self.name}: no '{key}' input files were given (inputs: {sorted(self.inputs)})")
        files = self.inputs[key]
        files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
        want = len(self.pair_ids) if per_pair else 1
        if len(files) != want:
            expect = f"one per pair {self.pair_ids}" if per_pair else "one"
            raise ArtifactInputError(
                f"{self.name}: expected {want} '{key}' file(s) ({expect}), got {len(files)}: {files}"
            )
        for f in files:
            check_file(self.name, f, key)
        return [str(f) for f in files]

    def tensors(self) -> list[str]:
        tensors = list(self.spec.get("tensors") or [])
        if not tensors:
            raise ArtifactInputError(
                f"{self.name}: the artifact's spec names no tensors (set artifacts.{self.name}.tensors in the config)"
            )
        return tensors

    def label(self, pid: str) -> str:
        return pair_label(self.pairs[pid], pid)

    def subtitle(self, extra: str = "") -> str:
        parts = [SYNTHETIC_NOTE] if self.synthetic else []
        parts.append(f"config '{self.config_name}'")
        if extra:
            parts.append(extra)
        return " · ".join(parts)


@dataclass
class TrainingContext(Context):
    """A :class:`Context` that also carries the config entries of the artifact's training
    runs (run id → ``{"base", "data", "backend", "spec", "label"}``, the workflow's ``runs`` param)."""

    runs: dict = field(default_factory=dict)


def check_file(artifact: str, path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ArtifactInputError(f"{artifact}: input file {p} ({what}) does not exist")
    if p.stat().st_size == 0:
        raise ArtifactInputError(f"{artifact}: input file {p} ({what}) is empty")
    return p


def read_csv(artifact: str, path: str | os.PathLike, columns: Iterable[str], what: str) -> pd.DataFrame:
    """Read a CSV the artifact needs; it must exist, have rows and carry ``columns``."""
    p = check_file(artifact, path, what)
    try:
        df = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise ArtifactInputError(f"{artifact}: input file {p} ({what}) has no data") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ArtifactInputError(f"{artifact}: input file {p} ({what}) lacks column(s) {missing}")
    if df.empty:
        raise ArtifactInputError(f"{artifact}: input file {p} ({what}) has no rows")
    return df


def read_jsonl(artifact: str, path: Path, what: str) -> list[dict]:
    p = check_file(artifact, path, what)
    rows = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ArtifactInputError(f"{artifact}: input file {p} ({what}) line {i} is not JSON: {err}") from None
        if not isinstance(row, dict):
            raise ArtifactInputError(f"{artifact}: input file {p} ({what}) line {i} is not a JSON object")
        rows.append(row)
    if not rows:
        raise ArtifactInputError(f"{artifact}: input file {p} ({what}) has no rows")
    return rows


def read_json(artifact: str, path: str | os.PathLike, what: str) -> dict:
    p = check_file(artifact, path, what)
    try:
        obj = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ArtifactInputError(f"{artifact}: input file {p} ({what}) is not JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ArtifactInputError(f"{artifact}: input file {p} ({what}) is not a JSON object")
    return obj


def pair_label(pair: dict, pid: str) -> str:
    """Legend label of a pair: its configured label, plus the algorithm when the label lacks it."""
    label = pair.get("label") or pid
    algo = pair.get("algorithm")
    if algo and algo.lower() not in label.lower():
        label = f"{label} [{algo}]"
    return label


def layered(df: pd.DataFrame, artifact: str, path: str) -> pd.DataFrame:
    """Rows that belong to a decoder block, with an integer ``layer``."""
    out = df[df["layer"].notna()].copy()
    if out.empty:
        raise ArtifactInputError(f"{artifact}: input file {path} has no rows with a decoder-block layer")
    out["layer"] = out["layer"].astype(int)
    return out


def layer_mean(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean over each layer's matrices (NaN-skipping), indexed by layer."""
    return df.groupby("layer")[list(columns)].mean().sort_index()


def finite_or_raise(values: np.ndarray | pd.Series, artifact: str, path: str, what: str) -> None:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or not np.isfinite(arr).any():
        raise ArtifactInputError(f"{artifact}: input file {path} has no finite values of {what}")
