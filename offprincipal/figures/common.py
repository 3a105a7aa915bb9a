"""Shared pieces of the figure renderers: input checks, style, layer aggregation, saving.

Every renderer reads its numbers from the files the workflow hands it; the helpers here
raise :class:`ArtifactInputError` -- naming the artifact, the file and what is missing --
instead of drawing anything from an incomplete input.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from offprincipal.artifacts.catalogue import ARTIFACTS  # noqa: E402
from offprincipal.io import atomic_path  # noqa: E402

PNG_DPI = 150
SYNTHETIC_NOTE = "synthetic stand-ins (not trained models)"
#: a colour-blind-safe cycle (Okabe-Ito), fixed so every figure colours pairs alike
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "offprincipal",
}

# room (inches) kept above the axes for the title + subtitle and per legend row below them
_TITLE_IN = 0.62
_LEGEND_ROW_IN = 0.2
_SUBTITLE_LINE_IN = 0.17


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


def pair_label(pair: dict, pid: str) -> str:
    """Legend label of a pair: its configured label, plus the algorithm when the label lacks it."""
    label = pair.get("label") or pid
    algo = pair.get("algorithm")
    if algo and algo.lower() not in label.lower():
        label = f"{label} [{algo}]"
    return label


def colors(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


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


def updated_counts(df: pd.DataFrame) -> pd.Series:
    """Number of updated entries per matrix, ``update_density * numel``."""
    return (df["update_density"] * df["numel"]).round()


def pooled_overlap(df: pd.DataFrame, mask: str) -> tuple[float, float]:
    """Share of all updated entries of ``df``'s matrices that lie in the ``mask`` mask,
    Σ overlap·updated / Σ updated, and its random baseline weighted alike,
    Σ density·updated / Σ updated (the overlap expected if each matrix's updates ignored
    the mask). NaN when nothing was updated."""
    w = updated_counts(df)
    keep = w > 0
    total = float(w[keep].sum())
    if total == 0:
        return float("nan"), float("nan")
    ov = float((df.loc[keep, f"overlap_{mask}"] * w[keep]).sum()) / total
    base = float((df.loc[keep, f"density_{mask}"] * w[keep]).sum()) / total
    return ov, base


def pooled_overlap_by_layer(df: pd.DataFrame, mask: str) -> pd.DataFrame:
    rows = [
        {"layer": layer, "overlap": ov, "baseline": base}
        for layer, g in df.groupby("layer")
        for ov, base in [pooled_overlap(g, mask)]
    ]
    return pd.DataFrame(rows).set_index("layer").sort_index()


def integer_layer_axis(ax, layers: Iterable[int]) -> None:
    layers = sorted(set(int(x) for x in layers))
    ax.set_xlabel("layer")
    if len(layers) <= 40:
        ax.set_xticks(layers)
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def new_figure(nrows: int, ncols: int, *, panel_w: float = 3.6, panel_h: float = 2.9, **kw):
    """A figure of ``nrows x ncols`` panels; call inside ``plt.rc_context(STYLE)``."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols, panel_h * nrows), squeeze=False, **kw)
    return fig, axes


def finish(fig, ctx: Context, *, subtitle_extra: str = "", handles=None, labels=None, footnote: str = "",
           legend_cols: int | None = None) -> None:
    """Title and subtitle above the panels, a figure legend and an optional footnote below
    them; the figure grows so the panels keep their size. Then lay out."""
    w, h0 = fig.get_size_inches()
    legend_in = footnote_in = 0.0
    ncol = rows = 0
    if handles:
        ncol = legend_cols or (1 if max(len(l) for l in labels) > 45 or len(labels) > 4 else len(labels))
        ncol = max(1, min(ncol, len(labels)))
        rows = -(-len(labels) // ncol)
        legend_in = _LEGEND_ROW_IN * rows + 0.15
    if footnote:
        footnote_in = 0.14 * (footnote.count("\n") + 1) + 0.1
    subtitle = "\n".join(textwrap.wrap(ctx.subtitle(subtitle_extra), max(40, int(w * 13))))
    title_in = _TITLE_IN + _SUBTITLE_LINE_IN * subtitle.count("\n")
    h = h0 + title_in + legend_in + footnote_in
    fig.set_size_inches(w, h)
    fig.text(0.5, 1 - 0.2 / h, ctx.title, ha="center", va="center", fontsize=11, fontweight="bold")
    fig.text(0.5, 1 - 0.34 / h, subtitle, ha="center", va="top", fontsize=8.5, color="#444444",
             style="italic", linespacing=1.3)
    if footnote:
        fig.text(0.01, 0.05 / h, footnote, ha="left", va="bottom", fontsize=7, color="#333333")
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False,
                   bbox_to_anchor=(0.5, footnote_in / h))
    fig.tight_layout(rect=(0, (legend_in + footnote_in) / h, 1, 1 - title_in / h))


def wrap(text: str, width: int = 28) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def save_figure(fig, pdf: str | os.PathLike, png: str | os.PathLike) -> None:
    """Write ``fig`` as PDF and PNG (dpi 150); both files appear together or not at all."""
    try:
        with atomic_path(pdf) as tmp_pdf, atomic_path(png) as tmp_png:
            fig.savefig(tmp_pdf, format="pdf", metadata={"CreationDate": None, "ModDate": None})
            fig.savefig(tmp_png, format="png", dpi=PNG_DPI, metadata={"Software": None})
    finally:
        plt.close(fig)


def finite_or_raise(values: np.ndarray | pd.Series, artifact: str, path: str, what: str) -> None:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or not np.isfinite(arr).any():
        raise ArtifactInputError(f"{artifact}: input file {path} has no finite values of {what}")
