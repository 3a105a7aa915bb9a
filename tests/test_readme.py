"""The README's artifact list: every catalogued artifact, its path, and a rebuild command that
names a config rendering it (the command's target must exist in that config's DAG)."""

from __future__ import annotations

import re
from pathlib import Path

from offprincipal.artifacts.catalogue import ARTIFACTS, CLAIMED, DERIVED
from offprincipal.config import load

REPO = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `(?P<name>\w+)` \| .* \| `(?P<folder>figures|tables)/(?P=name)\.\w+`.* \| `snakemake --cores 2 "
                 r"(?:--configfile=(?P<config>\S+) )?(?P<target>\w+)` \|$", re.M)


def test_every_artifact_is_listed_with_a_command_that_builds_it():
    rows = {m["name"]: m for m in ROW.finditer((REPO / "README.md").read_text())}
    assert set(rows) == set(ARTIFACTS)
    for name, m in rows.items():
        assert m["target"] == name
        assert m["folder"] == ("figures" if ARTIFACTS[name].kind == "figure" else "tables")
        config = load(REPO / (m["config"] or "config/config.yaml"))
        renders = set(config["artifacts"])
        if name in DERIVED:
            assert renders & set(CLAIMED), name
        else:
            assert name in renders, (name, m["config"])
