"""Shared drawing pieces of the figure renderers: style, colours, title / legend layout, saving.

Reading and checking inputs is the data layer's job (:mod:`offprincipal.artifacts.data`).
"""

from __future__ import annotations

import os
import textwrap
from typing import Iterable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from offprincipal.artifacts.data.context import Context  # noqa: E402
from offprincipal.io import atomic_path  # noqa: E402

PNG_DPI = 150
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


def colors(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


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


