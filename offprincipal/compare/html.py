"""The compare report as one self-contained HTML file: inline PNG images (data URIs), inline
CSS, no scripts, fonts or links to anything outside the file."""

from __future__ import annotations

import base64
import html
import io
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from offprincipal.compare.numbers import KIND_ORDER  # noqa: E402

HEATMAP_CMAP = "viridis"
DPI = 110
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;line-height:1.45;padding:0 16px}
h1{font-size:1.5em;margin:0 0 .3em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1.02em;margin-top:1.2em} .summary{font-size:1.02em;background:#f6f8fa;padding:12px 16px;border-radius:6px}
.warning{background:#fff3cd;border:1px solid #e0b400;padding:10px 14px;border-radius:6px;margin:12px 0}
table{border-collapse:collapse;font-size:.9em;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f0f0f0} td.l,th.l{text-align:left} img{max-width:100%;height:auto;display:block;margin:8px 0}
.meta{color:#555;font-size:.88em} code{font-size:.92em}
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # each figure is laid out by tight_layout already
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(uri: str, cls: str, alt: str, **data) -> str:
    extra = "".join(f' data-{k}="{html.escape(str(v))}"' for k, v in data.items())
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="{uri}"{extra}>'


def _grid(rows: list[dict], value: str) -> tuple[np.ndarray, list[str], list[str]]:
    """layer × kind matrix of ``value`` (rows: layers, then 'outside layers')."""
    df = pd.DataFrame(rows)
    if df.empty:
        return np.zeros((0, 0)), [], []
    df["row"] = df["layer"].map(lambda x: "outside layers" if x is None or pd.isna(x) else int(x))
    kinds = sorted(df["kind"].unique(), key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else 99)
    layer_rows = sorted(r for r in df["row"].unique() if r != "outside layers")
    row_keys = layer_rows + (["outside layers"] if (df["row"] == "outside layers").any() else [])
    mat = np.full((len(row_keys), len(kinds)), np.nan)
    idx = {r: i for i, r in enumerate(row_keys)}
    kid = {k: j for j, k in enumerate(kinds)}
    for r in df.itertuples():
        v = getattr(r, value)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            mat[idx[r.row], kid[r.kind]] = v
    return mat, [str(r) for r in row_keys], kinds


def _heatmap_axes(ax, mat, rows, cols, title, vmin, vmax, cbar_label, fmt):
    cmap = plt.get_cmap(HEATMAP_CMAP).with_extremes(bad="#dddddd")  # grey: no value (no such module, flagged)
    im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols)
    step = max(1, len(rows) // 30)
    ax.set_yticks(range(0, len(rows), step), rows[::step])
    ax.set_xlabel("module kind")
    ax.set_ylabel("layer")
    ax.set_title(title)
    if mat.size <= 160:
        for (i, j), v in np.ndenumerate(mat):
            if np.isfinite(v):
                ax.text(j, i, fmt(v), ha="center", va="center", fontsize=6.5,
                        color="white" if (v - vmin) / ((vmax - vmin) or 1) < 0.55 else "black")
    cb = ax.figure.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label(cbar_label)


def sparsity_heatmap(numbers: dict) -> str:
    rows = numbers["sparsity"]["by_layer_kind"]
    eta, r, c = _grid(rows, "sparsity_eta")
    ab, _, _ = _grid(rows, "sparsity_abs")
    h = max(3.0, 0.22 * len(r) + 1.6)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(4.0, 0.55 * len(c) + 2.2), h))
    pct = lambda v: f"{100 * v:.0f}"  # noqa: E731
    _heatmap_axes(axes[0], eta, r, c, "update sparsity, η rule (bitwise bf16)", 0, 1, "share unchanged", pct)
    _heatmap_axes(axes[1], ab, r, c, "update sparsity, absolute rule |Δw| ≤ 1e-5", 0, 1, "share unchanged", pct)
    fig.tight_layout()
    return _png(fig)


def geometry_heatmap(numbers: dict) -> str | None:
    rows = [x for x in numbers["geometry"]["by_layer_kind"] if x.get("nss") is not None]
    if not rows:
        return None
    for x in rows:
        x["log_nss"] = math.log10(x["nss"]) if x["nss"] and x["nss"] > 0 else None
    nss, r, c = _grid(rows, "log_nss")
    ang, _, _ = _grid(rows, "max_angle_U_deg")
    finite = nss[np.isfinite(nss)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-6, 0)
    if hi - lo < 0.5:
        lo, hi = lo - 0.25, hi + 0.25
    amax = float(np.nanmax(ang)) if np.isfinite(ang).any() else 1.0
    h = max(3.0, 0.22 * len(r) + 1.6)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(4.0, 0.55 * len(c) + 2.2), h))
    _heatmap_axes(axes[0], nss, r, c, "spectrum shift, log10 NSS", lo, hi, "log10 NSS", lambda v: f"{v:.1f}")
    _heatmap_axes(axes[1], ang, r, c, "largest principal angle (U), degrees", 0, amax or 1.0, "degrees",
                  lambda v: f"{v:.2g}")
    fig.tight_layout()
    return _png(fig)


def overlap_curves(numbers: dict) -> str | None:
    rows = [x for x in numbers["geometry"]["by_layer"] if x.get("layer") is not None and x.get("overlap_princ") is not None]
    if not rows:
        return None
    layers = [int(x["layer"]) for x in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, key, title in ((axes[0], "princ", "principal mask"), (axes[1], "low", "low-magnitude mask")):
        ax.plot(layers, [x[f"overlap_{key}"] for x in rows], "o-", color=PALETTE[1], label="share of updates inside")
        ax.plot(layers, [x[f"density_{key}"] for x in rows], "--", color=PALETTE[0], label="random baseline (mask density)")
        ax.set_xlabel("layer")
        ax.set_ylabel("share of updated entries")
        ax.set_title(f"updates in the {title}")
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def angle_curves(numbers: dict) -> str | None:
    curves = pd.DataFrame(numbers["geometry"]["angle_curves"])
    rows = [x for x in numbers["geometry"]["by_layer"] if x.get("layer") is not None and x.get("nss") is not None]
    if curves.empty and not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for i, side in enumerate(("U", "V")):
        c = curves[curves["side"] == side] if not curves.empty else curves
        if not c.empty:
            axes[0].plot(c["k"], c["max_angle_deg"], "o-", color=PALETTE[i], label=f"{side} ({'left' if side == 'U' else 'right'})")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("k (top-k singular subspace)")
    axes[0].set_ylabel("largest principal angle, degrees")
    axes[0].set_title("principal angles vs k (mean over matrices)")
    axes[0].legend(fontsize=8)
    if rows:
        layers = [int(x["layer"]) for x in rows]
        axes[1].semilogy(layers, [max(x["nss"], 1e-12) for x in rows], "o-", color=PALETTE[2])
        axes[1].set_xlabel("layer")
        axes[1].set_ylabel("NSS (mean over matrices)")
        axes[1].set_title("normalized spectrum shift per layer")
        axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def spectra_curves(numbers: dict) -> str | None:
    samples = numbers["spectra"]
    if not samples:
        return None
    fig, axes = plt.subplots(1, len(samples), figsize=(3.6 * len(samples), 3.0), squeeze=False)
    for ax, s in zip(axes[0], samples):
        i = np.arange(1, len(s["base"]) + 1)
        ax.semilogy(i, s["base"], color=PALETTE[0], label="base")
        ax.semilogy(i, s["finetuned"], "--", color=PALETTE[1], label="fine-tuned")
        ax.set_title(f"{s['name'].removeprefix('model.').removesuffix('.weight')}\nNSS {s['nss']:.2g}", fontsize=8.5)
        ax.set_xlabel("index i")
        ax.set_ylabel("singular value σᵢ")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def jaccard_heatmap(cross: dict, labels: list[str]) -> str:
    n = len(cross["runs"])
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(3.6, 0.6 * n + 2), max(3.0, 0.6 * n + 1.4)))
    for ax, key, title in ((axes[0], "jaccard_matrix", "observed Jaccard (pooled)"),
                           (axes[1], "baseline_matrix", "independent-Bernoulli baseline")):
        m = np.array(cross[key], dtype=float)
        np.fill_diagonal(m, np.nan)
        _heatmap_axes(ax, m, labels, labels, title, 0, 1, "Jaccard", lambda v: f"{v:.2f}")
        ax.set_xlabel("fine-tune")
        ax.set_ylabel("fine-tune")
    fig.tight_layout()
    return _png(fig)


def consensus_figure(cross: dict) -> str:
    maps = cross["consensus_maps"]
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(4.2 * (1 + len(maps)), 3.3), squeeze=False)
    hist = pd.DataFrame(cross["consensus"])
    c = hist["runs_updated"].to_numpy()
    ax = axes[0][0]
    ax.bar(c - 0.2, hist["observed"], 0.4, color=PALETTE[1], label="observed")
    ax.bar(c + 0.2, hist["independent"], 0.4, color="white", edgecolor=PALETTE[0], hatch="///", label="if independent")
    ax.set_xticks(c)
    ax.set_xlabel(f"runs (of {len(cross['runs'])}) that updated an entry")
    ax.set_ylabel("share of entries")
    ax.legend(fontsize=8)
    ax.set_title("consensus count")
    for ax, m in zip(axes[0][1:], maps):
        im = ax.imshow(np.array(m["ratio"]), cmap="magma_r", vmin=0, vmax=1,
                       aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.85).set_label("share of runs updating")
        ax.set_title(f"{m['name'].removeprefix('model.').removesuffix('.weight')} {m['shape'][0]}×{m['shape'][1]}\n"
                     "(block means)", fontsize=8.5)
        ax.set_xlabel("input feature (column)")
        ax.set_ylabel("output unit (row)")
    fig.tight_layout()
    return _png(fig)


def _table(rows: list[dict], cols: list[tuple[str, str, callable]]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(t)}</th>' for i, (t, _, _) in enumerate(cols))
    body = []
    for r in rows:
        cells = []
        for i, (_, key, fmt) in enumerate(cols):
            v = r.get(key)
            cells.append(f'<td class="{"l" if i == 0 else ""}">{html.escape(fmt(v) if v is not None else "–")}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _pct(v) -> str:
    return f"{100 * v:.2f}%"


def _g(v) -> str:
    return f"{v:.3g}"


def render(report: dict) -> str:
    """The whole HTML document of a report dict (``offprincipal.compare.report``)."""
    e = html.escape
    base = report["base"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>offprincipal compare: {e(base['id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Where did fine-tuning change {e(base['id'])}?</h1>",
        f"<p class='meta'>base {e(base['display'])}; fine-tuned: "
        + ", ".join(e(f["display"]) for f in report["finetuned"])
        + f". offprincipal {e(report['version'])}, η = {report['settings']['eta']:g}, absolute tolerance "
        f"{report['settings']['abs_tolerance']:g}, top-k {report['settings']['report_k']} for angles, principal-mask "
        f"rank {report['settings']['principal_rank_k']}, α = {report['settings']['mask_alpha']:g}.</p>",
    ]
    for p in report["pairs"].values():
        if p["lineage"].get("warning"):
            parts.append(f"<div class='warning'><b>Lineage warning.</b> {e(p['lineage']['warning'])}</div>")
    parts.append(f"<p class='summary' id='summary'>{e(report['summary'])}</p>")
    for pid, p in report["pairs"].items():
        parts.append(f"<h2 id='pair-{e(pid)}'>{e(p['label'])}</h2>")
        parts.append(_img(sparsity_heatmap(p), "heatmap", f"update sparsity per layer and module kind, {pid}",
                          kind="sparsity", pair=pid))
        ov = p["sparsity"]["overall"]
        parts.append(_table([{"what": "all parameters", **ov}] + [{"what": r["kind"], **r} for r in p["sparsity"]["by_kind"]], [
            ("tensors", "what", str), ("parameters", "numel", lambda v: f"{int(v):,}"),
            ("sparsity (η rule)", "sparsity_eta", _pct), ("sparsity (|Δw| ≤ 1e-5)", "sparsity_abs", _pct),
            ("inf/NaN base", "nonfinite_base", lambda v: f"{int(v):,}"), ("inf/NaN fine-tuned", "nonfinite_ft", lambda v: f"{int(v):,}"),
        ]))
        for title, uri, cls in (
            ("Spectrum and principal angles per layer × module kind", geometry_heatmap(p), "heatmap"),
            ("Updates in the principal and low-magnitude masks, against random", overlap_curves(p), "curves"),
            ("Principal angles and spectrum shift", angle_curves(p), "curves"),
            ("Singular values of the base and the fine-tune", spectra_curves(p), "curves"),
        ):
            if uri:
                parts.append(f"<h3>{e(title)}</h3>")
                parts.append(_img(uri, cls, f"{title}, {pid}", pair=pid, kind=title.split()[0].lower()))
        parts.append("<h3>Per layer</h3>")
        parts.append(_table(p["geometry"]["by_layer"], [
            ("layer", "layer", lambda v: str(int(v))), ("matrices", "matrices", str), ("NSS", "nss", _g),
            ("max angle U°", "max_angle_U_deg", _g), ("max angle V°", "max_angle_V_deg", _g),
            ("in principal mask", "overlap_princ", _pct), ("random", "density_princ", _pct),
            ("in low-magnitude mask", "overlap_low", _pct), ("random", "density_low", _pct),
            ("update rank / full", "update_rank_ratio", _pct), ("flagged", "flagged", str),
        ]))
        if p["geometry"]["flagged"]:
            parts.append("<h3>Matrices left out of the spectral metrics</h3>")
            parts.append(_table(p["geometry"]["flagged"], [("matrix", "name", str), ("reason", "flag", str)]))
    cross = report.get("crossrun")
    if cross:
        labels = [f"R{i + 1}" for i in range(len(cross["runs"]))]
        parts.append("<h2 id='crossrun'>Across the fine-tunes</h2><p class='meta'>"
                     + "; ".join(f"{t} = {e(r)}" for t, r in zip(labels, cross["runs"])) + "</p>")
        parts.append(_img(jaccard_heatmap(cross, labels), "heatmap", "pairwise Jaccard of update masks", kind="jaccard"))
        parts.append(_img(consensus_figure(cross), "curves", "consensus of update masks", kind="consensus"))
    parts.append("<h2>Files</h2><p class='meta'>Every number above is in <code>report.json</code>; per-tensor and "
                 "per-matrix values in the pipeline's CSVs: "
                 + ", ".join(f"<code>{e(f)}</code>" for f in report["files"]) + ".</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
