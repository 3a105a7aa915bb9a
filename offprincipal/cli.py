"""``offprincipal`` command line: helpers around the Snakemake workflow.

    offprincipal compare BASE FT [FT2 ...] -o OUT/ [--cores N] [--profile P] [-- SNAKEMAKE_ARGS]

analyses any checkpoints -- Hugging Face directories, verl ``global_step_N/actor`` shards, Hub
ids with an optional ``@revision`` -- and writes a self-contained report (see
:mod:`offprincipal.compare.run`).

    offprincipal pin-revisions config/paper.yaml

writes into the config the commits the fetch rule resolved for every branch/tag revision
(see :mod:`offprincipal.checkpoints.pinning`). Run it after the checkpoints are fetched,
e.g. ``snakemake --configfile=config/paper.yaml --cores 4 fetch``.

    offprincipal verify results/default

re-checks every artifact's provenance sidecar (``{figures,tables}/*.provenance.json``) against
the files on disk and names each artifact whose inputs changed or are missing; exit 1 if any
(see :mod:`offprincipal.artifacts.provenance`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from offprincipal.checkpoints.pinning import PinningError, pin_revisions
from offprincipal.config import ConfigError, load
from offprincipal.layout import Layout


def _pin(args: argparse.Namespace) -> int:
    config = load(args.config)
    manifests = args.manifests or Path(Layout.of(config).manifests_dir())
    pins, not_fetched = pin_revisions(args.config, manifests)
    for pin in pins:
        print(f"pinned {pin.checkpoint}: {pin.repo}@{pin.revision} -> {pin.commit}")
    for cid in not_fetched:
        print(f"not fetched yet, left as is: {cid} ({config['checkpoints'][cid]['revision']})")
    if not pins and not not_fetched:
        print(f"{args.config}: every Hub revision is already a commit")
    return 1 if (not_fetched and args.require_all) else 0


def _verify(args: argparse.Namespace) -> int:
    from offprincipal.artifacts.provenance import verify

    checked = verify(args.results)
    if not checked:
        print(f"offprincipal verify: no provenance sidecars under {args.results}/figures or /tables", file=sys.stderr)
        return 2
    stale = {name: problems for name, problems in checked.items() if problems}
    for name, problems in stale.items():
        for problem in problems:
            print(f"{name}: {problem}")
    print(f"{len(checked) - len(stale)} of {len(checked)} artifacts match their inputs"
          + (f"; stale: {', '.join(stale)}" if stale else ""))
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:  # its own parser: arguments after `--` go to Snakemake
        from offprincipal.compare.run import main as compare_main

        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(prog="offprincipal", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("compare", help="analyse a base and fine-tuned checkpoints into one report (see `offprincipal compare -h`)")
    pin = sub.add_parser("pin-revisions", help="replace branch/tag revisions in a config by the fetched commits")
    pin.add_argument("config", help="config file to rewrite, e.g. config/paper.yaml")
    pin.add_argument("--manifests", help="folder of the fetch manifests (default: <paths.results>/<name>/checkpoints)")
    pin.add_argument("--require-all", action="store_true", help="exit 1 if some Hub checkpoint is not fetched yet")
    pin.set_defaults(func=_pin)
    ver = sub.add_parser("verify", help="check every artifact's provenance sidecar against the files on disk")
    ver.add_argument("results", help="a config's results folder, e.g. results/default")
    ver.set_defaults(func=_verify)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PinningError) as err:
        print(f"offprincipal {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
