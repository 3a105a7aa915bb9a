"""The result layout: every path a rule writes or a reader opens under one config's results
folder, ``{paths.results}/{name}/``, said once.

The workflow's rules call these with Snakemake wildcard patterns (``layout.manifest("{ckpt}")``
gives ``results/toy/checkpoints/{ckpt}.json``); its input functions, the renderers' input lists,
the provenance sidecars, ``offprincipal compare`` and the tests call them with ids. Paths are
strings so that a pattern stays a pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the per-pair files of the metrics stage (``pairs/{pair}/{name}``)
PAIR_FILES = ("updates.csv", "masks.npz", "geometry.csv", "angles.csv", "lineage.json", "rotation.csv",
              "rotation_layers.csv")
#: the files of ``offprincipal compare``'s report (``compare/{base}/{name}``)
COMPARE_FILES = ("report.html", "report.json", "sparsity_layers.csv", "geometry_layers.csv", "jaccard.csv",
                 "consensus.csv")


@dataclass(frozen=True)
class Layout:
    """Paths under ``root`` (one config's results folder)."""

    root: str

    @classmethod
    def of(cls, config: dict) -> "Layout":
        """The layout of a loaded config: ``{paths.results}/{name}``."""
        return cls(f"{config['paths']['results']}/{config['name']}")

    def _p(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # ---------------------------------------------------------------- checkpoints

    def checkpoint(self, ckpt: str) -> str:
        """The directory of a checkpoint the pipeline builds (synthetic, toy, intervened, restored, merged verl)."""
        return self._p("checkpoints", ckpt)

    def manifests_dir(self) -> str:
        """The folder of every checkpoint's manifest (and of built checkpoints)."""
        return self._p("checkpoints")

    def manifest(self, ckpt: str) -> str:
        """Every checkpoint's manifest: source, repo + resolved commit or run + step, local path."""
        return self._p("checkpoints", f"{ckpt}.json")

    def spectra(self, ckpt: str) -> str:
        """A checkpoint's SVD cache (all singular values and the top-k vectors per matrix)."""
        return self._p("spectra", f"{ckpt}.safetensors")

    # ---------------------------------------------------------------- training

    def toy_data(self) -> str:
        return self._p("toy", "data")

    def dataset(self, ds: str) -> str:
        return self._p("datasets", ds)

    def dataset_manifest(self, ds: str) -> str:
        return self._p("datasets", f"{ds}.json")

    def run_dir(self, run: str) -> str:
        """A training run: run.json, metrics.jsonl, saved steps."""
        return self._p("runs", run)

    def train_state(self, run: str) -> str:
        """A verl run's resumable state, outside the rule's outputs so a failed job keeps it."""
        return self._p("train_state", run)

    def merged_step(self, run: str, step: str) -> str:
        return self._p("merged", run, step)

    def training_mask(self, run: str) -> str:
        return self._p("training_masks", f"{run}.npz")

    def pissa_init(self, run: str) -> str:
        return self._p("pissa", run)

    def frozen_check(self, run: str, step: str) -> str:
        return self._p("checks", "frozen", run, f"{step}.json")

    # ---------------------------------------------------------------- evaluation

    def eval_result(self, suite: str, ckpt: str) -> str:
        return self._p("eval", suite, f"{ckpt}.json")

    def eval_samples(self, suite: str, ckpt: str) -> str:
        return self._p("eval", suite, f"{ckpt}.samples.jsonl.gz")

    def paired(self, artifact: str, *, ood: bool = False) -> str:
        """An accuracy artifact's paired comparisons (``.ood.csv``: on its out-of-distribution suite)."""
        return self._p("eval", "paired", f"{artifact}{'.ood' if ood else ''}.csv")

    # ---------------------------------------------------------------- metrics

    def pair_file(self, pair: str, name: str) -> str:
        if name not in PAIR_FILES:
            raise ValueError(f"unknown per-pair file {name!r} (one of {', '.join(PAIR_FILES)})")
        return self._p("pairs", pair, name)

    def crossrun(self, artifact: str) -> str:
        return self._p("crossrun", f"{artifact}.csv")

    def compare_file(self, base: str, name: str) -> str:
        if name not in COMPARE_FILES:
            raise ValueError(f"unknown compare report file {name!r} (one of {', '.join(COMPARE_FILES)})")
        return self._p("compare", base, name)

    # ---------------------------------------------------------------- artifacts

    def artifact_file(self, name: str, kind: str, ext: str) -> str:
        """``figures/{name}.{ext}`` for a figure, ``tables/{name}.{ext}`` for a table."""
        folder = {"figure": "figures", "table": "tables"}[kind]
        return self._p(folder, f"{name}.{ext}")

    def sidecar(self, name: str, kind: str) -> str:
        return self.artifact_file(name, kind, "provenance.json")

    # ---------------------------------------------------------------- job records

    def logs_dir(self) -> str:
        return self._p("logs")

    def log(self, rule: str, *ids: str) -> str:
        """One log per job: ``logs/{rule}/{id}/....log`` (``logs/{rule}.log`` for a job without ids)."""
        return self._p("logs", *((rule, *ids[:-1], f"{ids[-1]}.log") if ids else (f"{rule}.log",)))

    def benchmark(self, rule: str, *ids: str) -> str:
        return self._p("benchmarks", rule, *ids[:-1], f"{ids[-1]}.tsv")

