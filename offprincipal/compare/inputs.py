"""What the workflow's ``compare_report`` rule reads for one base checkpoint, given the
config's pairs and the path conventions of ``workflow/rules/common.smk``."""

from __future__ import annotations

from typing import Callable, Mapping

PAIR_FILES = ("updates.csv", "geometry.csv", "angles.csv", "masks.npz", "lineage.json")


def pairs_of_base(base: str, pairs: Mapping[str, dict]) -> list[str]:
    """Pair ids with ``base`` as base checkpoint, in config order."""
    return [pid for pid, p in pairs.items() if p["base"] == base]


def report_inputs(
    base: str,
    pairs: Mapping[str, dict],
    pair_file: Callable[[str, str], str],
    spectra: Callable[[str], str],
    manifest: Callable[[str], str],
) -> dict[str, list[str]]:
    ids = pairs_of_base(base, pairs)
    files = {name.split(".")[0]: [pair_file(pid, name) for pid in ids] for name in PAIR_FILES}
    files["base_spectra"] = [spectra(base)]
    files["ft_spectra"] = [spectra(pairs[pid]["finetuned"]) for pid in ids]
    files["manifests"] = [manifest(base)] + [manifest(pairs[pid]["finetuned"]) for pid in ids]
    return files
