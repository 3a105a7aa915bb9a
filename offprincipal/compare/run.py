"""The ``offprincipal compare`` command: checkpoints in, a report in ``OUT/`` out.

    offprincipal compare BASE FT [FT2 ...] -o OUT/ [--cores N] [--profile P] [-- SNAKEMAKE_ARGS]

1. Each argument is resolved (:mod:`.sources`) and checked: a local or verl directory that is
   not a readable checkpoint, and a local pair of different architectures, fail here, before
   anything runs, with a message naming the checkpoint (and tensor).
2. Sizes are read and the disk/time estimate printed (:mod:`.estimate`) -- before any download.
3. ``OUT/config.yaml`` is written (:mod:`.setup`) and Snakemake runs the project's workflow on
   it in ``OUT/`` (``--directory OUT``), so the same rules, caching (rerunning the command
   recomputes only what changed), ``--cores`` and ``--profile`` apply. One Snakemake run
   fetches/merges/registers the checkpoints, checks every pair's lineage (the config's
   ``metrics.lineage_first`` makes the pair's sparsity job and its fine-tune's spectra wait
   for it, and the rule's priority runs it before the base's spectra; a warning is printed as
   soon as it is found, and again at the end) and computes the metrics and the report.
4. Only when everything succeeded are ``report.html``, ``report.json`` and the report's CSVs
   copied (atomically) to ``OUT/``; a failed run leaves no report there (a report from an
   earlier run is removed first), and Snakemake removes the outputs of failed jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from offprincipal.checkpoints.lineage import architecture_mismatch
from offprincipal.checkpoints.reader import Checkpoint, CheckpointError, pair_names
from offprincipal.compare import estimate as est
from offprincipal.compare.setup import CONFIG_NAME, MARKER, RESULTS_NAME, build_config, metric_settings, pair_id, write_config
from offprincipal.compare.sources import SourceError, parse_sources
from offprincipal.config import ConfigError
from offprincipal.io import atomic_path
from offprincipal.layout import COMPARE_FILES, Layout

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
DEFAULT_KINDS = ("q", "k", "v", "o", "gate", "up", "down")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Mismatch|Exit)\b.*")


class CompareError(RuntimeError):
    """A problem with the command's input, reported without a traceback."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="BASE then one or more fine-tunes: a Hugging Face directory, a verl global_step_N/actor "
                        "directory, or a Hub id ORG/NAME[@REVISION]")
    p.add_argument("-o", "--out", required=True, help="output folder (report.html, report.json, CSVs, the pipeline's files)")
    p.add_argument("--cores", type=int, help="Snakemake --cores (default: the CPUs available, unless --profile is given)")
    p.add_argument("--profile", help="Snakemake --profile, e.g. profiles/slurm")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--top-k", type=int, dest="svd_top_k", help="singular vectors kept per matrix (default 128, capped at the smallest matrix side)")
    p.add_argument("--report-k", type=int, help="k of the per-layer principal-angle summaries (default 64)")
    p.add_argument("--principal-rank-k", type=int, help="rank k of the principal mask (default 128)")
    p.add_argument("--mask-alpha", type=float, help="fraction of the principal and low-magnitude masks (default 0.5)")
    p.add_argument("--no-update-rank", action="store_true", help="skip the update rank (an SVD of every ΔW)")
    p.add_argument("-n", "--dry-run", action="store_true", help="write the config, print the estimate and Snakemake's plan")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CompareError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        cfg = out / CONFIG_NAME
        if not (cfg.is_file() and cfg.read_text(encoding="utf-8", errors="replace").startswith(MARKER)):
            raise CompareError(f"output folder {out} is not empty and was not written by `offprincipal compare`; "
                               "choose a new or empty folder")


def _early_pair_checks(ids, sources) -> None:
    """Architecture and tensor-name check of local pairs, before anything runs (verl and Hub
    checkpoints get the same check in the workflow's lineage rule)."""
    if sources[0].kind != "local":
        return
    with Checkpoint(sources[0].spec["path"], label=ids[0]) as base:
        for cid, s in zip(ids[1:], sources[1:]):
            if s.kind != "local":
                continue
            with Checkpoint(s.spec["path"], label=cid) as ft:
                problem = architecture_mismatch(base, ft)
                if problem:
                    raise CompareError(problem)
                try:
                    pair_names(base, ft)
                except CheckpointError as err:
                    raise CompareError(str(err)) from None


def _inventories(ids, sources, hub_cache) -> dict[str, est.Inventory]:
    out = {}
    for cid, s in zip(ids, sources):
        if s.kind == "local":
            out[cid] = est.local_inventory(s.spec["path"])
        elif s.kind == "verl":
            out[cid] = est.verl_inventory(s.spec["path"])
        else:
            out[cid] = est.hub_inventory(s.spec["repo"], s.spec["revision"], hub_cache)
    return out


#: below this much estimated compute, jobs take one thread each so that independent ones run
#: side by side: their cost is then starting Python (~3 s), not arithmetic
SMALL_RUN_S = 20.0


def _snakemake(out: Path, targets: list[str], args, extra: list[str], *, small: bool = False) -> int:
    if not SNAKEFILE.is_file():
        raise CompareError(f"the workflow is not next to the package ({SNAKEFILE} is missing); install offprincipal "
                           "from a clone of its repository (pip install -e .)")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(out),
           "--configfile", str(out / CONFIG_NAME)]
    if args.cores or not args.profile:
        cmd += ["--cores", str(args.cores or len(os.sched_getaffinity(0)))]
    if args.profile:  # a folder given relative to where the command runs, not to OUT
        cmd += ["--profile", str(Path(args.profile).absolute()) if Path(args.profile).is_dir() else args.profile]
    if args.dry_run:
        cmd += ["--dry-run"]
    if small and not any(a.startswith(("--max-threads", "--set-threads")) for a in extra):
        cmd += ["--max-threads", "1"]
    cmd += targets + extra  # targets first: an option of several values (--quiet a b) must not swallow them
    sys.stdout.flush()  # our lines before Snakemake's, when both go to one pipe
    return subprocess.call(cmd)


def _job_errors(logs: Path, since: float) -> list[str]:
    """``rule (wildcards): last error line`` of every job log written since ``since``."""
    found = []
    if not logs.is_dir():
        return found
    for log in sorted(logs.glob("*/*.log")):
        if log.stat().st_mtime < since:
            continue
        lines = log.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if _ERROR_LINE.match(ln)]
        if errors:
            found.append(f"{log.parent.name} ({log.stem}): {errors[-1]}")
    return found


def _fail(results: Path, since: float, what: str) -> int:
    print(f"\noffprincipal compare: {what} failed; no report was written.", file=sys.stderr)
    for line in _job_errors(Path(Layout(str(results)).logs_dir()), since):
        print(f"  {line}", file=sys.stderr)
    return 1


def _publish(src: Path, out: Path, names) -> list[Path]:
    done = []
    for name in names:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(src / name, tmp)
        done.append(out / name)
    return done


def run(args: argparse.Namespace, extra: list[str]) -> int:
    started = time.time()
    out = Path(args.out).expanduser().absolute()
    _check_out(out)
    try:
        ids, sources = parse_sources(args.checkpoints)
        _early_pair_checks(ids, sources)
    except (SourceError, CheckpointError) as err:
        raise CompareError(str(err)) from None
    from huggingface_hub import constants as hf_constants

    hub_cache = hf_constants.HF_HUB_CACHE
    print(f"offprincipal compare: base {ids[0]} = {sources[0].display} ({sources[0].kind})")
    for cid, s in zip(ids[1:], sources[1:]):
        print(f"  fine-tuned {cid} = {s.display} ({s.kind})")
    try:
        inventories = _inventories(ids, sources, hub_cache)
    except CheckpointError as err:
        raise CompareError(str(err)) from None
    base_inv = inventories[ids[0]]
    sides = [min(s) for s in base_inv.matrices(DEFAULT_KINDS)] if base_inv.known else []
    metrics = metric_settings(min(sides) if sides else None, {
        "svd_top_k": args.svd_top_k, "report_k": args.report_k, "principal_rank_k": args.principal_rank_k,
        "mask_alpha": args.mask_alpha, "update_rank": False if args.no_update_rank else None,
    })
    config = build_config(ids, sources, out, metrics=metrics, device=args.device, hub_cache=hub_cache)
    if args.profile:
        # on a cluster the SVD passes ask for a GPU node (cluster.svd_gpus, default 1); the
        # section's defaults fill the rest, and the profile supplies partitions and account
        config.setdefault("cluster", {})
    full = {"matrix_kinds": list(DEFAULT_KINDS), **metrics}
    estimate = est.estimate(inventories, ids[0], ids[1:], full)
    for line in est.describe(estimate, hub_cache):
        print(line)
    small = not estimate.unknown and estimate.total_seconds < SMALL_RUN_S and not args.profile
    out.mkdir(parents=True, exist_ok=True)
    for name in COMPARE_FILES:  # a failed run must not leave an earlier report in place
        (out / name).unlink(missing_ok=True)
    try:
        cfg_path = write_config(config, out)
    except ConfigError as err:
        raise CompareError(f"the generated config is invalid (please report this): {err}") from None
    print(f"config: {cfg_path}")
    results = out / RESULTS_NAME
    layout = Layout(str(results))
    report = layout.compare_file(ids[0], "report.html")
    report_dir = Path(report).parent
    if args.dry_run:
        return _snakemake(out, [report], args, extra, small=small)
    lineage = [Path(layout.pair_file(pair_id(ids[0], cid), "lineage.json")) for cid in ids[1:]]
    print(f"job logs (progress bars of the long passes): {Path(layout.log('<rule>', '<name>'))}")
    if _snakemake(out, [*map(str, lineage), report], args, extra, small=small) != 0:
        checked = all(p.is_file() for p in lineage)  # Snakemake removes a failed job's outputs
        return _fail(results, started, "the analysis" if checked else "fetching the checkpoints or the lineage check")
    for path in lineage:  # again at the end, beside the summary
        warning = json.loads(path.read_text()).get("warning")
        if warning:
            print(f"\nWARNING: {warning}\n", file=sys.stderr)
    names = [n for n in COMPARE_FILES if len(ids) > 2 or n not in ("jaccard.csv", "consensus.csv")]
    published = _publish(report_dir, out, names)
    summary = json.loads((out / "report.json").read_text())["summary"]
    print("\n" + summary + "\n")
    print("report: " + str(published[0]))
    print("numbers: " + ", ".join(str(p) for p in published[1:]))
    print(f"per-tensor and per-matrix CSVs: {results / 'pairs'}/<pair>/{{updates,geometry,angles}}.csv")
    return 0


def main(argv: list[str]) -> int:
    """Entry point for ``offprincipal compare`` (arguments after ``--`` go to Snakemake)."""
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(prog="offprincipal compare", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args, extra)
    except CompareError as err:
        print(f"offprincipal compare: {err}", file=sys.stderr)
        return 2
