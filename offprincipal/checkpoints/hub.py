"""Pinned Hugging Face Hub downloads of (base, fine-tuned) checkpoints.

One call, :func:`fetch_checkpoint`, brings one checkpoint into the standard Hugging Face cache
with ``huggingface_hub.snapshot_download``. It downloads only what the weight analysis needs
(safetensors weights, configs, tokenizer files), checks the snapshot, and writes a manifest
(``results/<config>/checkpoints/{ckpt}.json``, see ``docs/architecture.md``).

Behaviour of ``huggingface_hub`` 2.x this module relies on (checked against 2.4):

* ``snapshot_download(cache_dir=...)`` returns ``<cache>/models--ORG--NAME/snapshots/<commit>``,
  online and offline, so the resolved 40-hex commit is the name of the returned directory.
* In offline mode (``HF_HUB_OFFLINE=1``, read once at import into
  ``huggingface_hub.constants.HF_HUB_OFFLINE``) a branch or tag is resolved through the cached
  ``refs/<revision>`` file and the whole cached snapshot directory is returned. It may then hold
  files outside ``allow_patterns`` that another download put there, so the manifest lists only
  files that match :data:`ALLOW_PATTERNS`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import filter_repo_objects

from offprincipal.io import write_json

logger = logging.getLogger(__name__)

#: Files fetched from a checkpoint repo. Weights are restricted to the transformers names
#: (``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` + index), so that
#: ``consolidated.safetensors`` (the second, mistral-format copy of the weights in Mistral repos)
#: and adapter or optimizer files are not downloaded. Never .bin/.pt/.gguf/.msgpack/.h5 or docs.
ALLOW_PATTERNS: list[str] = [
    "model*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
]

_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_SAFETENSORS_INDEX = "model.safetensors.index.json"


class HubAccessError(RuntimeError):
    """A gated repository was requested but no Hugging Face token is available."""


class IncompleteCheckpointError(RuntimeError):
    """The fetched snapshot lacks what the analysis needs (safetensors weights, config.json)."""


def is_commit(revision: str) -> bool:
    """True when ``revision`` is a full 40-hex commit sha (an immutable pin)."""
    return bool(_COMMIT_RE.fullmatch(revision))


def has_token() -> bool:
    """True when a Hub token is available: ``HF_TOKEN`` or one saved by ``hf auth login``."""
    return bool(huggingface_hub.get_token())


def _cached_snapshot(repo: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path | None:
    """The cached snapshot directory for ``repo@revision`` if one with a config.json exists."""
    if revision is None:
        return None
    root = Path(cache_dir if cache_dir is not None else hf_constants.HF_HUB_CACHE).expanduser()
    storage = root / repo_folder_name(repo_id=repo, repo_type="model")
    commit = revision
    if not is_commit(revision):
        ref = storage / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snapshot = storage / "snapshots" / commit
    return snapshot if (snapshot / "config.json").is_file() else None


def check_access(
    repo: str,
    *,
    gated: bool,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> None:
    """Raise :class:`HubAccessError` when ``repo`` is gated and no token is available.

    Called before any download. A snapshot of ``repo@revision`` that is already in the cache
    (``revision`` and ``cache_dir`` given) needs no token: ``snapshot_download`` serves it from the
    cache, offline (``HF_HUB_OFFLINE=1``) or when the Hub refuses the anonymous request.
    """
    if not gated or has_token():
        return
    if _cached_snapshot(repo, revision, cache_dir) is not None:
        logger.info("%s is gated and no HF token is set; using the cached snapshot of %s", repo, revision)
        return
    offline = (
        " (HF_HUB_OFFLINE is set and no cached snapshot was found, so the download also needs network access)"
        if hf_constants.is_offline_mode()
        else ""
    )
    raise HubAccessError(
        f"{repo} is a gated repository and no Hugging Face token is available{offline}. "
        f"To download it: (1) sign in at https://huggingface.co/{repo} and accept the licence / access "
        "conditions on the repo page; (2) create a read token at https://huggingface.co/settings/tokens; "
        "(3) export HF_TOKEN=<token> or run `hf auth login`; then re-run."
    )


def _snapshot_files(snapshot: Path) -> list[str]:
    """Relative POSIX paths of the files in ``snapshot`` that match :data:`ALLOW_PATTERNS`, sorted."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(snapshot):
        for fname in filenames:
            full = Path(dirpath) / fname
            if full.is_file():  # follows the cache's blob symlinks; skips dangling ones
                found.append(full.relative_to(snapshot).as_posix())
    return sorted(filter_repo_objects(found, allow_patterns=ALLOW_PATTERNS))


def _check_snapshot(name: str, repo: str, revision: str, snapshot: Path, files: list[str]) -> None:
    where = f"checkpoint {name!r} ({repo}@{revision}, snapshot {snapshot})"
    if "config.json" not in files:
        raise IncompleteCheckpointError(f"{where} has no config.json.")
    weights = [f for f in files if f.endswith(".safetensors")]
    if not weights:
        others = sorted(
            p.name for p in snapshot.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".gguf", ".h5"}
        )
        hint = f" It has {others}; convert them to safetensors first." if others else ""
        raise IncompleteCheckpointError(
            f"{where} has no safetensors weights (looked for {ALLOW_PATTERNS[:2]}).{hint}"
        )
    if _SAFETENSORS_INDEX in files:
        weight_map = json.loads((snapshot / _SAFETENSORS_INDEX).read_text()).get("weight_map", {})
        missing = sorted(set(weight_map.values()) - set(files))
        if missing:
            raise IncompleteCheckpointError(
                f"{where}: {_SAFETENSORS_INDEX} names shards that are not in the snapshot: {missing}. "
                "Re-run the download with network access (or the shards do not match ALLOW_PATTERNS)."
            )


def fetch_checkpoint(
    name: str,
    repo: str,
    revision: str,
    *,
    cache_dir: str | os.PathLike | None,
    gated: bool = False,
    manifest: str | os.PathLike | None = None,
) -> dict:
    """Download ``repo@revision`` (filtered by :data:`ALLOW_PATTERNS`) and describe it.

    Returns the manifest ``{"name", "source": "hub", "repo", "revision", "commit", "path",
    "files", "pinned"}`` and, if ``manifest`` is given, writes it there atomically (only after
    the snapshot passed its checks). ``commit`` is the resolved 40-hex commit, ``path`` the
    absolute snapshot directory, ``pinned`` whether ``revision`` was itself a commit.

    Raises :class:`HubAccessError` (gated repo, no token) before any download, a
    ``RuntimeError`` naming ``name``, ``repo`` and ``revision`` when the Hub call fails (repo or
    revision not found, offline and not cached, ...; the original error is ``__cause__``), and
    :class:`IncompleteCheckpointError` when the snapshot lacks safetensors weights or config.json.
    """
    check_access(repo, gated=gated, revision=revision, cache_dir=cache_dir)
    pinned = is_commit(revision)
    if not pinned:
        logger.warning(
            "checkpoint %r: revision %r of %s is a branch or tag, a mutable pin; the manifest records the "
            "commit it resolves to now. Freeze it to that commit in the config for reproducibility.",
            name,
            revision,
            repo,
        )
    try:
        path = huggingface_hub.snapshot_download(
            repo_id=repo,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=ALLOW_PATTERNS,
        )
    except Exception as err:
        hint = ""
        if isinstance(err, GatedRepoError):
            hint = f" The repo is gated: accept its licence at https://huggingface.co/{repo} with the account of your token."
        elif isinstance(err, LocalEntryNotFoundError) and hf_constants.is_offline_mode():
            hint = " HF_HUB_OFFLINE is set and the snapshot is not (completely) in the cache."
        raise RuntimeError(
            f"could not fetch checkpoint {name!r} from the Hugging Face Hub: repo {repo}, revision {revision}: "
            f"{type(err).__name__}: {err}.{hint}"
        ) from err

    snapshot = Path(path).absolute()
    commit = snapshot.name
    if not is_commit(commit) or (pinned and commit != revision):
        raise RuntimeError(
            f"checkpoint {name!r} ({repo}@{revision}): snapshot_download returned {snapshot}, whose name is "
            "not the expected commit sha"
        )
    files = _snapshot_files(snapshot)
    _check_snapshot(name, repo, revision, snapshot, files)

    record = {
        "name": name,
        "source": "hub",
        "repo": repo,
        "revision": revision,
        "commit": commit,
        "path": str(snapshot),
        "files": files,
        "pinned": pinned,
    }
    if manifest is not None:
        write_json(manifest, record)
    return record
