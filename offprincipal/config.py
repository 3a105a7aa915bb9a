"""Load and validate a pipeline configuration.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks each value and fills
defaults; ``check_references`` then checks what a schema cannot express: that every name a
pair or artifact uses is defined, and that metric settings agree with each other. Every
error names the offending key.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonschema
import yaml
from jsonschema import Draft202012Validator, validators

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def _default_filling(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _invalid(key: str, message: str) -> ConfigError:
    return ConfigError(f"invalid config at '{key}': {message}")


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate(config: dict, schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """Validate ``config`` in place (filling defaults) and return it."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _default_filling(Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        first = errors[0]
        raise _invalid(_key_path(first), first.message)
    check_references(config)
    return config


def load(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        config = yaml.safe_load(fh) or {}
    try:
        return validate(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def check_references(config: dict) -> None:
    checkpoints = config["checkpoints"]
    for cid, ck in checkpoints.items():
        if ck["source"] == "synthetic":
            if ck["recipe"] == "base":
                if "from" in ck:
                    raise _invalid(f"checkpoints.{cid}.from", "a synthetic base is built from nothing")
            else:
                parent = ck.get("from")
                if parent is None:
                    raise _invalid(f"checkpoints.{cid}.from", f"recipe '{ck['recipe']}' needs the id of a synthetic base")
                if parent not in checkpoints or checkpoints[parent].get("recipe") != "base":
                    raise _invalid(f"checkpoints.{cid}.from", f"'{parent}' is not a synthetic base checkpoint")
        elif ck["source"] == "intervened":
            if ck["from"] not in checkpoints:
                raise _invalid(f"checkpoints.{cid}.from", f"unknown checkpoint '{ck['from']}'")
        elif ck["source"] == "restored":
            _check_restored(checkpoints, cid, ck)
        elif ck["source"] == "toy_base":
            if "toy" not in config:
                raise _invalid(f"checkpoints.{cid}", "a toy_base checkpoint needs the 'toy' section")
        elif ck["source"] == "run":
            _check_run_checkpoint(config, cid, ck)
    for did, ds in config.get("datasets", {}).items():
        _check_dataset(config, did, ds)
    for rid, run in config.get("runs", {}).items():
        _check_run(config, rid, run)
    for pid, pair in config["pairs"].items():
        for side in ("base", "finetuned"):
            if pair[side] not in checkpoints:
                raise _invalid(f"pairs.{pid}.{side}", f"unknown checkpoint '{pair[side]}'")
        if pair["base"] == pair["finetuned"]:
            raise _invalid(f"pairs.{pid}", "base and finetuned are the same checkpoint")
    _check_evaluations(config)
    for aid, art in config.get("artifacts", {}).items():
        for i, pid in enumerate(art["pairs"]):
            if pid not in config["pairs"]:
                raise _invalid(f"artifacts.{aid}.pairs[{i}]", f"unknown pair '{pid}'")
        _check_artifact_evaluation(config, aid, art)
    m = config.get("metrics", {})
    top_k = m.get("svd_top_k", 128)
    for key in ("principal_rank_k", "report_k"):
        if m.get(key, 0) > top_k:
            raise _invalid(f"metrics.{key}", f"{m[key]} exceeds metrics.svd_top_k = {top_k} singular vectors kept")
    if any(k > top_k for k in m.get("angle_ks", [])):
        raise _invalid("metrics.angle_ks", f"every k must be <= metrics.svd_top_k = {top_k}")


def datasets(config: dict) -> dict:
    """The config's datasets, plus an implicit ``{source: toy, task: <name>}`` for every run
    whose ``data`` names a toy task that the ``datasets`` section does not define."""
    out = dict(config.get("datasets", {}))
    for run in config.get("runs", {}).values():
        name = run.get("data")
        if name is not None and name not in out and _is_toy_task(name):
            out[name] = {"source": "toy", "task": name}
    return out


def _is_toy_task(name: str) -> bool:
    from offprincipal.toy.task import ALL_TASKS

    return name in ALL_TASKS


def _check_dataset(config: dict, did: str, ds: dict) -> None:
    if ds["source"] == "toy":
        if not _is_toy_task(ds["task"]):
            from offprincipal.toy.task import ALL_TASKS

            raise _invalid(f"datasets.{did}.task", f"unknown toy task '{ds['task']}' (known: {', '.join(ALL_TASKS)})")
        if "toy" not in config:
            raise _invalid(f"datasets.{did}", "a toy dataset needs the 'toy' section (it is a split of the toy datasets)")
    elif "{question}" not in ds["prompt_template"]:
        raise _invalid(f"datasets.{did}.prompt_template", "must contain '{question}'")


def _check_run(config: dict, rid: str, run: dict) -> None:
    from offprincipal.training.spec import RunSpec, SpecError, check_verl_spec

    if run["base"] not in config["checkpoints"]:
        raise _invalid(f"runs.{rid}.base", f"unknown checkpoint '{run['base']}'")
    known = datasets(config)
    if run["data"] not in known:
        raise _invalid(
            f"runs.{rid}.data",
            f"unknown dataset '{run['data']}' (not in the datasets section, and not a toy task; "
            f"datasets: {', '.join(sorted(known)) or 'none'})",
        )
    try:
        spec = RunSpec.from_dict(run["spec"])
        if run["backend"] == "verl":
            check_verl_spec(spec)
    except SpecError as err:
        field = getattr(err, "field", None)
        raise _invalid(f"runs.{rid}.spec" + (f".{field}" if field else ""), str(err)) from None
    if run["backend"] != "verl" and "verl" in run:
        raise _invalid(f"runs.{rid}.verl", "resources of a verl run, but the run's backend is 'trl'")
    if run["backend"] == "trl" and known[run["data"]]["source"] != "toy":
        raise _invalid(f"runs.{rid}.data", f"the trl backend trains on toy tasks only; '{run['data']}' is a Hub dataset (use backend: verl)")


def _check_restored(checkpoints: dict, cid: str, ck: dict) -> None:
    for side in ("base", "finetuned"):
        if ck[side] not in checkpoints:
            raise _invalid(f"checkpoints.{cid}.{side}", f"unknown checkpoint '{ck[side]}'")
        if ck[side] == cid:
            raise _invalid(f"checkpoints.{cid}.{side}", "a restored checkpoint cannot be its own parent")
    if ck["base"] == ck["finetuned"]:
        raise _invalid(f"checkpoints.{cid}", "base and finetuned are the same checkpoint")
    if ("top_p" in ck) == ("layers" in ck):
        raise _invalid(f"checkpoints.{cid}", "a restored checkpoint needs exactly one of 'top_p' (fraction of singular "
                                             "directions) or 'layers' (first, middle or last quarter)")


def _check_run_checkpoint(config: dict, cid: str, ck: dict) -> None:
    run = config.get("runs", {}).get(ck["run"])
    if run is None:
        raise _invalid(f"checkpoints.{cid}.run", f"unknown run '{ck['run']}'")
    saved = list(run["spec"].get("save_steps", []))
    if ck["step"] != "final" and ck["step"] not in saved:
        raise _invalid(f"checkpoints.{cid}.step", f"run '{ck['run']}' saves steps {saved} (and 'final'), not {ck['step']}")


def _check_evaluations(config: dict) -> None:
    from offprincipal.evaluation.suites import SuiteError, is_toy, with_defaults

    ev = config.get("evaluations", {})
    for sid, suite in ev.get("suites", {}).items():
        settings = {k: v for k, v in suite.items() if k != "note"}
        try:
            with_defaults(settings)
        except SuiteError as err:
            raise _invalid(f"evaluations.suites.{sid}", str(err)) from None
        if any(is_toy(t) for t in suite["tasks"]) and "toy" not in config:
            raise _invalid(f"evaluations.suites.{sid}.tasks", "toy tasks read the toy world's datasets: add a 'toy' section")
    for sid, ckpts in ev.get("checkpoints", {}).items():
        if sid not in ev.get("suites", {}):
            raise _invalid(f"evaluations.checkpoints.{sid}", f"unknown suite '{sid}' (define it under evaluations.suites)")
        for i, cid in enumerate(ckpts):
            if cid not in config["checkpoints"]:
                raise _invalid(f"evaluations.checkpoints.{sid}[{i}]", f"unknown checkpoint '{cid}'")


def _check_artifact_evaluation(config: dict, aid: str, art: dict) -> None:
    from offprincipal.artifacts.catalogue import ARTIFACTS, OOD_ARTIFACTS

    suites = config.get("evaluations", {}).get("suites", {})
    reads_eval = aid in ARTIFACTS and "eval" in ARTIFACTS[aid].needs
    for key in ("suite", "ood_suite", "reference", "contrasts"):
        if key in art and not reads_eval:
            raise _invalid(f"artifacts.{aid}.{key}", f"artifact '{aid}' reads no evaluation")
    if not reads_eval:
        return
    if "suite" not in art:
        raise _invalid(f"artifacts.{aid}", f"artifact '{aid}' reads evaluations: name the suite ('suite: <id>')")
    if art["suite"] not in suites:
        raise _invalid(f"artifacts.{aid}.suite", f"unknown suite '{art['suite']}' (define it under evaluations.suites)")
    if "ood_suite" in art and art["ood_suite"] not in suites:
        raise _invalid(f"artifacts.{aid}.ood_suite", f"unknown suite '{art['ood_suite']}' (define it under evaluations.suites)")
    if aid in OOD_ARTIFACTS and "ood_suite" not in art:
        raise _invalid(f"artifacts.{aid}", f"artifact '{aid}' contrasts in- and out-of-distribution accuracy: name the "
                                           "out-of-distribution suite ('ood_suite: <id>')")
    if "reference" in art and art["reference"] not in art["pairs"]:
        raise _invalid(f"artifacts.{aid}.reference", f"'{art['reference']}' is not one of the artifact's pairs")
    for i, contrast in enumerate(art.get("contrasts", [])):
        for cid in contrast:
            if cid not in config["checkpoints"]:
                raise _invalid(f"artifacts.{aid}.contrasts[{i}]", f"unknown checkpoint '{cid}'")
        if contrast[0] == contrast[1]:
            raise _invalid(f"artifacts.{aid}.contrasts[{i}]", "compares a checkpoint with itself")
