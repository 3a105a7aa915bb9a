"""Freeze a config's mutable Hub revisions (``main``, tags) to the commits the fetch resolved.

A revision that is a branch moves when the repo's owner pushes, so a rerun months later may
analyse different weights. The fetch rule records, in each checkpoint's manifest, the 40-hex
commit it actually downloaded; :func:`pin_revisions` writes those commits back into the
config file, in place of the branch names, so the next run is reproducible. Only the
``revision:`` lines change: comments, order and layout of the file are kept, and the result
is parsed again and checked before it replaces the file.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from offprincipal.checkpoints.hub import is_commit
from offprincipal.io import atomic_path


class PinningError(ValueError):
    """A revision cannot be pinned; the message names the checkpoint."""


@dataclass(frozen=True)
class Pin:
    checkpoint: str
    repo: str
    revision: str  # what the config said (a branch or tag)
    commit: str  # what the fetch resolved it to


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int) -> range:
    """Indices of the lines nested under ``lines[start]`` (deeper indentation, or blank/comment)."""
    base = _indent(lines[start])
    end = start + 1
    while end < len(lines):
        text = lines[end].strip()
        if text and not text.startswith("#") and _indent(lines[end]) <= base:
            break
        end += 1
    return range(start + 1, end)


def _replace_revision(lines: list[str], pin: Pin) -> None:
    top = next((i for i, line in enumerate(lines) if re.match(r"checkpoints:\s*(#.*)?$", line)), None)
    if top is None:
        raise PinningError("config file has no top-level 'checkpoints:' section")
    entry = re.compile(rf"\s+{re.escape(pin.checkpoint)}:\s*(#.*)?$")
    at = next((i for i in _block(lines, top) if entry.match(lines[i])), None)
    if at is None:
        raise PinningError(f"checkpoint '{pin.checkpoint}': no block 'checkpoints.{pin.checkpoint}:' in the file")
    revision = re.compile(rf"(\s+revision:\s*)[\"']?{re.escape(pin.revision)}[\"']?\s*(#.*)?$")
    for i in _block(lines, at):
        m = revision.match(lines[i])
        if m:
            lines[i] = f"{m.group(1)}{pin.commit}  # was '{pin.revision}', resolved by the fetch"
            return
    raise PinningError(
        f"checkpoint '{pin.checkpoint}': no line 'revision: {pin.revision}' in its block; pin it by hand"
    )


def resolved_pins(config: dict, manifests: str | os.PathLike) -> tuple[list[Pin], list[str]]:
    """(pins to write, checkpoints still unpinned because they have not been fetched)."""
    pins, not_fetched = [], []
    for cid, spec in config.get("checkpoints", {}).items():
        if spec.get("source") != "hub" or is_commit(str(spec.get("revision", ""))):
            continue
        path = Path(manifests) / f"{cid}.json"
        if not path.is_file():
            not_fetched.append(cid)
            continue
        m = json.loads(path.read_text())
        if (m.get("repo"), m.get("revision")) != (spec["repo"], spec["revision"]):
            raise PinningError(
                f"checkpoint '{cid}': manifest {path} was fetched from {m.get('repo')}@{m.get('revision')},"
                f" the config asks for {spec['repo']}@{spec['revision']}; fetch it again first"
            )
        if not is_commit(str(m.get("commit", ""))):
            raise PinningError(f"checkpoint '{cid}': manifest {path} has no 40-hex 'commit'")
        pins.append(Pin(cid, spec["repo"], spec["revision"], m["commit"]))
    return pins, not_fetched


def pin_revisions(config_path: str | os.PathLike, manifests: str | os.PathLike) -> tuple[list[Pin], list[str]]:
    """Rewrite ``config_path`` with every fetched branch/tag revision replaced by its commit.

    Returns (pins written, checkpoints left unpinned because they have no manifest yet).
    The file is replaced atomically, and only after the rewritten text parses to the same
    config with exactly those revisions changed.
    """
    text = Path(config_path).read_text()
    config = yaml.safe_load(text)
    pins, not_fetched = resolved_pins(config, manifests)
    if not pins:
        return pins, not_fetched
    lines = text.splitlines()
    for pin in pins:
        _replace_revision(lines, pin)
    new_text = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    expected = copy.deepcopy(config)
    for pin in pins:
        expected["checkpoints"][pin.checkpoint]["revision"] = pin.commit
    if yaml.safe_load(new_text) != expected:  # guards the line edits above
        raise PinningError(f"{config_path}: rewriting the revision lines changed more than the revisions; nothing written")
    with atomic_path(config_path) as tmp:
        tmp.write_text(new_text)
    return pins, not_fetched
