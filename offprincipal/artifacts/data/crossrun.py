"""Table 2's numbers (and its claim's): the pairwise cross-run Jaccard rows of the spec's runs,
checked against ``crossrun/{artifact}.csv``, then their mean."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from offprincipal.artifacts.data.context import ArtifactInputError, Context, read_csv

JACCARD_COLUMNS = ("run_a", "run_b", "jaccard_pooled", "baseline_pooled", "jaccard_mean", "baseline_mean")

MEAN_ROW = "mean off-diagonal"


def jaccard_rows(ctx: Context) -> pd.DataFrame:
    """Pairwise Jaccard rows in the order of the spec's runs, then their mean (full precision)."""
    path = ctx.files("jaccard", per_pair=False)[0]
    df = read_csv(ctx.name, path, JACCARD_COLUMNS, "cross-run Jaccard")
    runs = ctx.pair_ids
    if len(runs) < 2:
        raise ArtifactInputError(f"{ctx.name}: a cross-run comparison needs at least two runs, the spec lists {runs}")
    index = {frozenset((a, b)): i for i, (a, b) in enumerate(zip(df["run_a"], df["run_b"]))}
    order, missing = [], []
    for a, b in itertools.combinations(runs, 2):
        i = index.get(frozenset((a, b)))
        if i is None:
            missing.append(f"{a}/{b}")
        else:
            order.append(i)
    if missing:
        raise ArtifactInputError(f"{ctx.name}: input file {path} (cross-run Jaccard) lacks run pair(s) {missing}")
    values = list(JACCARD_COLUMNS[2:])
    rows = df.iloc[order].reset_index(drop=True)
    if rows[values].isna().any().any():
        raise ArtifactInputError(f"{ctx.name}: input file {path} (cross-run Jaccard) has empty values in {values}")
    layer = ctx.spec.get("layer")
    if "layer" in rows.columns:
        have = rows["layer"].dropna().unique()
        if layer is not None and (len(have) != 1 or int(have[0]) != int(layer)):
            raise ArtifactInputError(
                f"{ctx.name}: input file {path} (cross-run Jaccard) is for layer(s) {list(have)}, the spec asks for layer {layer}"
            )
        if layer is None and len(have) == 1:
            layer = int(have[0])
    keep = ["run_a", "run_b", *values] + (["n_tensors"] if "n_tensors" in rows.columns else [])
    table = rows[keep].copy()
    table["ratio_pooled"] = table["jaccard_pooled"] / table["baseline_pooled"]
    mean = {"run_a": MEAN_ROW, "run_b": "", **{c: float(table[c].mean()) for c in [*values, "ratio_pooled"]}}
    if "n_tensors" in table.columns:
        mean["n_tensors"] = table["n_tensors"].iloc[0] if table["n_tensors"].nunique() == 1 else np.nan
    table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
    table["layer"] = layer if layer is not None else np.nan
    return table
