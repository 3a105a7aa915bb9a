"""Render one of the paper's artifacts from the files the workflow gives it.

``render_artifact`` is what ``workflow/scripts/render-artifact.py`` calls: figures are
written as PDF + PNG (dpi 150), tables as CSV (full precision) + Markdown (rounded). All
numbers come from the input files; a missing or incomplete input raises
:class:`~offprincipal.artifacts.data.context.ArtifactInputError` naming the artifact and the file,
and then no output file is left behind.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import matplotlib.pyplot as plt

from offprincipal.artifacts.catalogue import ARTIFACTS
from offprincipal.artifacts.data.context import ArtifactInputError, TrainingContext
from offprincipal.artifacts.figures.style import STYLE, save_figure
from offprincipal.io import write_table

__all__ = ["render_artifact", "renderer", "handled", "ArtifactInputError"]


def renderer(name: str):
    """The function the catalogue names for artifact ``name`` (``module:function`` under
    ``offprincipal.artifacts``): a figure's returns a matplotlib figure, a table's (CSV frame, Markdown frame)."""
    if name not in ARTIFACTS:
        raise ValueError(f"artifact {name!r} is not described in offprincipal.artifacts.catalogue.ARTIFACTS")
    module, _, function = ARTIFACTS[name].renderer.partition(":")
    try:
        return getattr(importlib.import_module(f"offprincipal.artifacts.{module}"), function)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"artifact {name!r}: renderer {ARTIFACTS[name].renderer!r} does not resolve: {err}") from None


def handled() -> list[str]:
    """Names of the catalogued artifacts whose renderer resolves."""
    out = []
    for name in ARTIFACTS:
        try:
            renderer(name)
        except ValueError:
            continue
        out.append(name)
    return sorted(out)


def _by_suffix(name: str, outputs: list[str], suffixes: tuple[str, ...]) -> list[str]:
    found = {}
    for out in outputs:
        found.setdefault(Path(out).suffix.lstrip(".").lower(), str(out))
    missing = [s for s in suffixes if s not in found]
    if missing:
        raise ValueError(f"{name}: outputs {list(outputs)} lack a .{'/.'.join(missing)} file")
    return [found[s] for s in suffixes]


def render_artifact(
    name: str,
    inputs: dict[str, list[str]],
    outputs: list[str],
    *,
    spec: dict,
    pairs: dict[str, dict],
    synthetic: bool,
    config_name: str,
    metrics: dict,
    runs: dict | None = None,
) -> None:
    """Render artifact ``name`` (a key of ``offprincipal.artifacts.catalogue.ARTIFACTS``) to ``outputs``.

    ``runs``: the config entries of the training runs behind the pairs (run id → entry), for
    the artifacts that read training runs."""
    render = renderer(name)
    ctx = TrainingContext(name=name, inputs=dict(inputs), spec=dict(spec), pairs=dict(pairs), synthetic=bool(synthetic),
                          config_name=config_name, metrics=dict(metrics or {}), runs=dict(runs or {}))
    try:
        if ARTIFACTS[name].kind == "table":
            csv, md = _by_suffix(name, outputs, ("csv", "md"))
            table, display = render(ctx)
            write_table(table, csv)
            write_table(display, md)
        else:
            pdf, png = _by_suffix(name, outputs, ("pdf", "png"))
            with plt.rc_context(STYLE):
                fig = render(ctx)
                save_figure(fig, pdf, png)
    except BaseException:
        plt.close("all")
        for out in outputs:  # like a failed Snakemake job: no (partial or stale) outputs remain
            Path(out).unlink(missing_ok=True)
        raise
