"""Pooled overlap of a pair's updates with a mask (Figs. 5, 7, 13 and their claims), from the
per-matrix rows of ``geometry.csv``: each matrix weighted by its number of updated entries."""

from __future__ import annotations

import pandas as pd

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
