"""What a checkpoint argument of ``offprincipal compare`` names, checked before anything runs.

* an existing directory holding ``model_world_size_W_rank_R.pt`` files (itself or its
  ``actor/`` folder): a raw **verl** FSDP checkpoint (``global_step_N/actor`` or ``global_step_N``);
* any other existing directory: a **local** Hugging Face checkpoint (config.json + safetensors);
* ``ORG/NAME`` or ``ORG/NAME@REVISION`` that is not a path on disk: a **Hub** repository at that
  revision (default ``main``).

Every problem found here is a :class:`SourceError` naming the argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from offprincipal.checkpoints.local import describe_checkpoint
from offprincipal.checkpoints.reader import CheckpointError
from offprincipal.checkpoints.verl import HF_DIR, actor_dir_of, rank_files, step_of

HUB_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<rev>[^@\s]+))?$")


class SourceError(ValueError):
    """A command-line checkpoint argument that cannot be used; the message names it."""


@dataclass
class Source:
    arg: str  # as typed
    kind: str  # "local" | "verl" | "hub"
    spec: dict  # the config entry (without an id)
    stem: str  # what the checkpoint id is made from
    display: str
    details: dict = field(default_factory=dict)  # local: the manifest description

    def key(self) -> tuple:
        """Identity: two arguments naming the same checkpoint have the same key."""
        if self.kind == "hub":
            return ("hub", self.spec["repo"], self.spec["revision"])
        return (self.kind, str(Path(self.spec["path"]).resolve()))


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s if s and s[0].isalnum() else f"c_{s}".strip("_") or "checkpoint"


def parse_source(arg: str) -> Source:
    path = Path(arg).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceError(f"{arg}: is a file; give the checkpoint's directory")
        return _verl(arg, path) if _looks_verl(path) else _local(arg, path)
    m = HUB_RE.match(arg)
    if m and not arg.startswith((".", "/", "~")):
        repo, rev = m.group("repo"), m.group("rev") or "main"
        name = repo.split("/", 1)[1]
        stem = name if m.group("rev") is None else f"{name}_{rev[:12]}"
        return Source(arg, "hub", {"source": "hub", "repo": repo, "revision": rev}, slug(stem), f"{repo}@{rev}")
    raise SourceError(
        f"{arg}: no such directory, and not a Hugging Face Hub id (ORG/NAME or ORG/NAME@REVISION)"
    )


def _looks_verl(path: Path) -> bool:
    try:
        actor_dir_of(path)
    except CheckpointError:
        return False
    return True


def _local(arg: str, path: Path) -> Source:
    try:
        details = describe_checkpoint(arg, path)
    except CheckpointError as err:
        raise SourceError(str(err)) from None
    resolved = Path(details["path"])
    return Source(arg, "local", {"source": "local", "path": str(resolved)}, slug(resolved.name), str(resolved), details)


def _verl(arg: str, path: Path) -> Source:
    try:
        actor = actor_dir_of(path)
        world, _ = rank_files(actor)
    except CheckpointError as err:
        raise SourceError(f"{arg}: {err}") from None
    if not (actor / HF_DIR / "config.json").is_file():
        raise SourceError(f"{arg}: verl checkpoint without {HF_DIR}/config.json in {actor}")
    step = step_of(actor)
    run_dir = actor.parent.parent if step is not None else actor.parent
    stem = f"{run_dir.name}_step{step}" if step is not None else actor.parent.name
    return Source(arg, "verl", {"source": "verl", "path": str(actor)}, slug(stem), f"{actor} (verl, {world} ranks)",
                  {"world_size": world, "step": step})


def assign_ids(sources: list[Source]) -> list[str]:
    """Unique config ids from the sources' stems (``name``, ``name_2``, ...)."""
    seen: dict[str, int] = {}
    ids = []
    for s in sources:
        n = seen.get(s.stem, 0) + 1
        seen[s.stem] = n
        ids.append(s.stem if n == 1 else f"{s.stem}_{n}")
    return ids


def parse_sources(args: list[str]) -> tuple[list[str], list[Source]]:
    """(ids, sources) of BASE FT [FT2 ...]; the first is the base. Refuses fewer than two
    arguments and an argument that names the same checkpoint as another."""
    if len(args) < 2:
        raise SourceError("give a base checkpoint and at least one fine-tuned checkpoint")
    sources = [parse_source(a) for a in args]
    seen: dict[tuple, str] = {}
    for s in sources:
        if s.key() in seen:
            raise SourceError(f"{s.arg} and {seen[s.key()]} are the same checkpoint")
        seen[s.key()] = s.arg
    return assign_ids(sources), sources
