"""What the workflow's ``compare_report`` rule reads for one base checkpoint, given the
config's pairs and its result layout (:class:`offprincipal.layout.Layout`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from offprincipal.layout import Layout

#: the per-pair files the report reads (a subset of offprincipal.layout.PAIR_FILES)
REPORT_PAIR_FILES = ("updates.csv", "geometry.csv", "angles.csv", "masks.npz", "lineage.json")


def pairs_of_base(base: str, pairs: Mapping[str, dict]) -> list[str]:
    """Pair ids with ``base`` as base checkpoint, in config order."""
    return [pid for pid, p in pairs.items() if p["base"] == base]


def report_inputs(
    base: str,
    pairs: Mapping[str, dict],
    layout: "Layout",
) -> dict[str, list[str]]:
    ids = pairs_of_base(base, pairs)
    files = {
        name.split(".")[0]: [layout.pair_file(pid, name) for pid in ids] for name in REPORT_PAIR_FILES
    }
    files["base_spectra"] = [layout.spectra(base)]
    files["ft_spectra"] = [layout.spectra(pairs[pid]["finetuned"]) for pid in ids]
    files["manifests"] = [layout.manifest(base)] + [
        layout.manifest(pairs[pid]["finetuned"]) for pid in ids
    ]
    return files
