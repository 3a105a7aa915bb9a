"""The artifact catalogue: for each figure and table, what it shows, what it reads and which function renders it.

Each artifact is a function of the pairs the config lists under ``artifacts.<name>.pairs``,
so the default (synthetic / toy) config and the paper config render the same artifacts from
different inputs. ``needs`` names the per-pair files the workflow must provide:

* ``updates``  — ``pairs/{pair}/updates.csv`` (per-tensor sparsity)
* ``geometry`` — ``pairs/{pair}/geometry.csv`` and ``angles.csv``
* ``masks``    — ``pairs/{pair}/masks.npz``
* ``spectra``  — the base and fine-tuned SVD caches of each pair
* ``jaccard``  — ``crossrun/{artifact}.csv`` over the artifact's pairs (one Jaccard per run pair)
* ``rotation`` — ``pairs/{pair}/rotation.csv`` and ``rotation_layers.csv`` (per-index singular-vector
  rotation, :mod:`offprincipal.metrics.rotation`, from the two spectra caches)
* ``runlog``   — the training run directory of each pair's fine-tuned checkpoint (``metrics.jsonl``)
* ``claims``   — every input of the claimed artifacts the config renders
  (:func:`offprincipal.artifacts.inputs.claims_inputs`)
* ``eval``     — the evaluation of each pair's base and fine-tuned checkpoint on the artifact's
  ``suite`` (``eval/{suite}/{ckpt}.json``) and the paired comparisons of its contrasts
  (``eval/paired/{artifact}.csv``; :func:`offprincipal.artifacts.inputs.evaluation_contrasts`); an artifact with an
  ``ood_suite`` (:data:`OOD_ARTIFACTS`) reads the same for that out-of-distribution suite
  (``eval/{ood_suite}/{ckpt}.json``, ``eval/paired/{artifact}.ood.csv``)

Every artifact also reads the base and fine-tuned checkpoint manifests of its pairs
(``checkpoints/{ckpt}.json``): its provenance sidecar records them, and some renderers read
them too (an intervention record, a run's step).

The artifacts after Fig. 18 in this table need training runs, so only configs with a toy
world (or, later, verl runs) render them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    kind: str  # "figure" (pdf + png) or "table" (csv + md)
    needs: tuple[str, ...]
    title: str
    caption: str
    #: ``module:function`` under ``offprincipal.artifacts`` that renders it (imported only when rendering,
    #: so the workflow reads the catalogue without loading matplotlib)
    renderer: str


ARTIFACTS: dict[str, Artifact] = {
    "table1": Artifact(
        "table",
        ("updates",),
        "Table 1 — bf16 update sparsity of fine-tuned checkpoints",
        "Update sparsity (share of parameters whose stored bf16 value did not change) of each fine-tuned "
        "checkpoint against its base, by the paper's bf16-aware probe (Def. 2.1, eta = 1e-3, identical to "
        "bitwise bf16 equality) and, beside it, by Mukherjee et al.'s absolute tolerance |dw| <= 1e-5, which "
        "counts real bf16 changes of small weights as unchanged (App. E.1). fp32-stored checkpoints are "
        "rounded to bf16 first. The paper's printed value is shown where it exists.",
        renderer="tables.paper:table1",
    ),
    "table2": Artifact(
        "table",
        ("jaccard",),
        "Table 2 — cross-run Jaccard of update masks in one block",
        "Pairwise Jaccard similarity of the bf16 update masks of independent RL runs from the same base, "
        "restricted to one decoder block, beside the value expected if each run updated entries "
        "independently at its own density (pq/(p+q-pq)). Pooled = sum |A and B| / sum |A or B| over the "
        "block's matrices.",
        renderer="tables.paper:table2",
    ),
    "fig1c": Artifact(
        "figure",
        ("geometry",),
        "Fig. 1c — RL rotates less and preserves the spectrum",
        "Per decoder block: the largest principal angle between the base's and the fine-tuned model's "
        "top-k singular subspaces (left, U, and right, V, averaged over the block's matrices) and the "
        "normalized spectrum shift NSS, for RL and SFT pairs.",
        renderer="figures.rotation:fig1c",
    ),
    "fig2": Artifact(
        "figure",
        ("masks",),
        "Fig. 2 — consensus of update masks across RL runs",
        "For chosen weight matrices: the share of runs that updated each entry (consensus ratio), and the "
        "distribution of that count beside the one expected if runs updated entries independently "
        "(Poisson-binomial from each run's density). Rows are output units, columns input features "
        "(torch's [out, in] layout).",
        renderer="figures.crossrun:fig2",
    ),
    "fig4": Artifact(
        "figure",
        ("geometry", "spectra"),
        "Fig. 4 — spectrum and principal subspaces under SFT vs RL",
        "Left: singular values of a chosen matrix for each checkpoint. Middle: NSS per matrix by layer. "
        "Right: largest principal angle of the top-k left and right singular subspaces as k grows.",
        renderer="figures.spectrum:fig4",
    ),
    "fig5": Artifact(
        "figure",
        ("geometry",),
        "Fig. 5 — RL updates avoid principal weights and prefer low-magnitude weights",
        "Per decoder block: share of updated entries that lie in the principal mask (top-alpha of "
        "|rank-k reconstruction of W0|) and in the low-magnitude mask (bottom-alpha of |W0|); the dashed "
        "line is the random baseline, the mask density alpha.",
        renderer="figures.overlap:fig5",
    ),
    "fig7": Artifact(
        "figure",
        ("geometry",),
        "Fig. 7 — principal overlap without its low-magnitude part",
        "Share of updated entries in the principal mask, in the principal-and-not-low-magnitude mask, and "
        "in the low-magnitude mask, over all matrices of each pair, each against its own random baseline "
        "(the mask's density).",
        renderer="figures.overlap:fig7",
    ),
    "fig8": Artifact(
        "figure",
        ("geometry",),
        "Fig. 8 — principal-subspace rotation of agent RL checkpoints",
        "Largest principal angle between base and fine-tuned top-k singular subspaces per decoder block, "
        "left (U) and right (V), for the agent checkpoints of Table 3.",
        renderer="figures.rotation:fig8",
    ),
    "fig12": Artifact(
        "figure",
        ("jaccard",),
        "Fig. 12 — cross-run Jaccard of update masks",
        "Pairwise Jaccard of the bf16 update masks of RL runs from one base, over all analysed matrices, "
        "and the independent-Bernoulli baseline for the same densities.",
        renderer="figures.crossrun:fig12",
    ),
    "fig13": Artifact(
        "figure",
        ("geometry",),
        "Fig. 13 — off-principal updates of zero-RL checkpoints",
        "As Fig. 5, for zero-RL (SimpleRL-Zoo) checkpoints of other model families.",
        renderer="figures.overlap:fig13",
    ),
    "fig16": Artifact(
        "figure",
        ("geometry", "spectra"),
        "Fig. 16 — spectrum preservation, SFT vs RL (DS-R1-Distill-Qwen-1.5B family)",
        "As Fig. 4, for the DeepSeek-R1-Distill-Qwen-1.5B family.",
        renderer="figures.spectrum:fig16",
    ),
    "fig17": Artifact(
        "figure",
        ("geometry", "spectra"),
        "Fig. 17 — spectrum preservation, SFT vs RL (Qwen3-14B family)",
        "As Fig. 4, for the Qwen3-14B-Base family (UniReason SFT vs RL).",
        renderer="figures.spectrum:fig17",
    ),
    "fig18": Artifact(
        "figure",
        ("geometry",),
        "Fig. 18 — principal-subspace rotation of RLHF checkpoints",
        "As Fig. 8, for the RLHF (DPO, SimPO) checkpoints of Table 3.",
        renderer="figures.rotation:fig18",
    ),
    "fig3": Artifact(
        "figure",
        ("masks", "updates"),
        "Fig. 3 — where updates land over training: row and column update ratios",
        "For a chosen matrix, the share of updated entries in each row (output unit) and each column "
        "(input feature) at successive checkpoints of one run, against the base; rows and columns that "
        "are updated early stay the ones updated later. Bottom: overall update sparsity per checkpoint.",
        renderer="figures.rowcol:fig3",
    ),
    "fig14": Artifact(
        "figure",
        ("masks", "updates"),
        "Fig. 14 — row and column update ratios over training (more matrices)",
        "As Fig. 3, for further matrices of the same run.",
        renderer="figures.rowcol:fig14",
    ),
    "fig6": Artifact(
        "figure",
        ("masks",),
        "Fig. 6 — scrambling the base's geometry removes the update bias",
        "Per decoder block, overlap (Jaccard) of update masks: a reference RL run against an independent "
        "run from the same base (the consistency level), and against a run from a function-preserving "
        "intervened base (ROTATE+PERMUTE or ROTATE on marked layers). Permuted tensors are mapped back to "
        "base coordinates; rotated ones have no elementwise correspondence and are compared as stored. "
        "Dashed: the independent-Bernoulli baseline.",
        renderer="figures.intervention:fig6",
    ),
    "table1_acc": Artifact(
        "table",
        ("updates", "eval"),
        "Table 1 with accuracy — update sparsity beside benchmark accuracy",
        "For each pair of Table 1: the bf16 update sparsity of the fine-tuned checkpoint (eta rule) beside the "
        "pass@1 (avg@k) of the base and the fine-tuned checkpoint on each task of the evaluation suite, with "
        "95% bootstrap intervals over problems, and the fine-tune's gain over its base with a paired bootstrap "
        "interval (problems resampled jointly). A view the paper does not print.",
        renderer="tables.paper:table1_acc",
    ),
    "fig9": Artifact(
        "figure",
        ("runlog", "eval"),
        "Fig. 9 — sparse RL with fixed masks: KL trajectory and accuracy",
        "Token-wise KL to the base policy per step (logged, not in the loss) for dense RL and RL restricted "
        "to the principal, non-principal, low-magnitude, safe (low or non-principal) and random masks "
        "(random at the safe mask's density); right: held-out pass@1 of each final checkpoint.",
        renderer="figures.training:fig9",
    ),
    "fig10": Artifact(
        "figure",
        ("runlog", "eval", "geometry"),
        "Fig. 10 — LoRA vs PiSSA in RL across ranks and learning rates",
        "Training reward per step and held-out pass@1 of LoRA and PiSSA runs (merged into full weights) "
        "at several ranks and learning rates.",
        renderer="figures.training:fig10",
    ),
    "fig11": Artifact(
        "figure",
        ("runlog", "eval", "geometry"),
        "Fig. 11 — PiSSA's principal-direction updates distort the spectrum",
        "Held-out pass@1 and spectrum drift (mean NSS over matrices) against learning rate for LoRA and "
        "PiSSA runs, with the principal-angle rotation of the merged weights.",
        renderer="figures.training:fig11",
    ),
    "fig15": Artifact(
        "figure",
        ("runlog",),
        "Fig. 15 — per-step KL to the base during RL",
        "Token-wise KL(pi_theta || pi_base) on each step's rollouts, logged without entering the loss "
        "(beta = 0): small but steadily growing.",
        renderer="figures.training:fig15",
    ),
    "table4": Artifact(
        "table",
        ("eval", "updates", "runlog"),
        "Table 4 — sparse RL with fixed masks: held-out accuracy",
        "Held-out pass@1 (avg@k) of the final checkpoints of dense RL and of RL restricted to each mask, "
        "with the share of parameters each mask leaves trainable and the run's update sparsity.",
        renderer="tables.paper:table4",
    ),
    "table5": Artifact(
        "table",
        ("eval", "updates", "runlog"),
        "Table 5 — sparse RL with fixed masks: accuracy at an intermediate step",
        "As Table 4, at an intermediate checkpoint of the same runs.",
        renderer="tables.paper:table5",
    ),
    "sec2_3": Artifact(
        "figure",
        ("updates", "runlog"),
        "Sec. 2.3 — apparent sparsity depends on the step size",
        "Update sparsity of the same RL run at several learning rates: with larger steps more sub-ULP "
        "updates cross the bf16 realization threshold and the apparent sparsity falls.",
        renderer="figures.training:sec2_3",
    ),
    "restore_topk": Artifact(
        "figure",
        ("eval",),
        "UV restoration by singular-value rank: ID and OOD accuracy (arXiv 2508.16546)",
        "Jin et al., 'RL Is Neither a Panacea Nor a Mirage'. An SFT checkpoint with the base's left and right singular vectors put back for the top-p fraction of "
        "each matrix's singular values, keeping the SFT singular values (W' = U_b S_f V_b^T on the top "
        "ceil(p*min(m,n)) indices, the SFT's own triplets below; cast to bf16): pass@1 on the SFT task's "
        "held-out problems (in-distribution) and on other task families (out-of-distribution) against p, "
        "beside the base (dashed) and the SFT checkpoint (p = 0). Each restored checkpoint's difference from the "
        "SFT checkpoint is paired over problems; 'recovered' is (restored - SFT) / (base - SFT).",
        renderer="figures.restoration:restore_topk",
    ),
    "restore_layers": Artifact(
        "figure",
        ("eval",),
        "UV restoration by layer group: ID and OOD accuracy (arXiv 2508.16546)",
        "As restore_topk, restoring every singular direction of the matrices of the first, middle or last quarter "
        "of the decoder layers only.",
        renderer="figures.restoration:restore_layers",
    ),
    "rotation_profile": Artifact(
        "figure",
        ("rotation", "eval"),
        "Singular-vector rotation of SFT and SFT-then-RL checkpoints (arXiv 2508.16546)",
        "Per singular-value index i: the angle between the base's and the fine-tune's i-th left (U) and right (V) "
        "singular vectors (sign-invariant), averaged over matrices, beside the largest principal angle of the "
        "window of indices [i, i+w) (immune to swaps of near-degenerate pairs) and the relative singular-value "
        "change; per layer: the mean angle; right: in- and out-of-distribution pass@1 of each fine-tune and base.",
        renderer="figures.restoration:rotation_profile",
    ),
    "sft_then_rl": Artifact(
        "figure",
        ("eval",),
        "SFT length sweep, then RL: OOD accuracy RL recovers (arXiv 2508.16546)",
        "SFT checkpoints of one run at increasing step counts, and an RL run from each: in- and "
        "out-of-distribution pass@1 of the base, each SFT checkpoint and its RL continuation against SFT length; "
        "RL's gain over its SFT start is paired over problems.",
        renderer="figures.restoration:sft_then_rl",
    ),
    "restore_table": Artifact(
        "table",
        ("eval",),
        "UV restoration: ID and OOD accuracy of restored SFT checkpoints (arXiv 2508.16546)",
        "The numbers of restore_topk and restore_layers: for the base, the SFT checkpoint and each restored "
        "checkpoint (top-p fraction or layer quarter, from its manifest), ID and OOD pass@1 with 95% bootstrap "
        "intervals, the paired difference from the SFT checkpoint, and the share of the SFT-to-base gap recovered.",
        renderer="tables.restoration:restore_table",
    ),
    "rotation_table": Artifact(
        "table",
        ("rotation", "eval"),
        "Singular-vector rotation and singular-value change per pair (arXiv 2508.16546)",
        "The numbers of rotation_profile: per pair, the mean over matrices and indices of the per-index angle "
        "of the left (U) and right (V) singular vectors, of the window angle and of |relative singular-value "
        "change|, over the top quarter of the cached indices and over all of them, beside ID and OOD pass@1.",
        renderer="tables.restoration:rotation_table",
    ),
    "sft_then_rl_table": Artifact(
        "table",
        ("eval",),
        "SFT length sweep, then RL: accuracy and OOD recovered (arXiv 2508.16546)",
        "The numbers of sft_then_rl: per SFT length, ID and OOD pass@1 of the base, the SFT checkpoint and the RL "
        "run from it, RL's paired gain over its SFT start and the share of the SFT-to-base OOD gap RL recovers.",
        renderer="tables.restoration:sft_then_rl_table",
    ),
    "claims": Artifact(
        "table",
        ("claims",),
        "Claims — the paper's quantitative claims, measured here, with verdicts",
        "Each of the paper's quantitative claims with what this configuration measured for it (the number and "
        "its interval where one exists), a verdict (holds / does not hold / inside the noise / not measured "
        "here) decided by the stated rule, and the artifact that shows it (offprincipal.artifacts.claims).",
        renderer="claims:claims_table",
    ),
}

#: artifacts that contrast in- and out-of-distribution accuracy: they need an ``ood_suite``
OOD_ARTIFACTS = ("restore_topk", "restore_layers", "rotation_profile", "sft_then_rl", "restore_table", "rotation_table",
                 "sft_then_rl_table")
#: artifacts made from other artifacts' inputs rather than configured with pairs: rendered
#: whenever the config renders any artifact they read
DERIVED = ("claims",)
#: the artifacts whose inputs the claims table reads (offprincipal.artifacts.claims measures each claim
#: from the first of its artifacts the config renders, and checks that all are listed here)
CLAIMED = ("table1", "table2", "fig4", "fig16", "fig17", "fig1c", "fig5", "fig7", "fig6", "fig9", "table4",
           "table5", "fig10", "fig11", "sec2_3", "rotation_table", "restore_table", "sft_then_rl_table")

#: artifacts that need only checkpoints (the foundation's set); the rest need training runs
CHECKPOINT_ONLY = ("table1", "table2", "fig1c", "fig2", "fig4", "fig5", "fig7", "fig8", "fig12", "fig13", "fig16", "fig17", "fig18")


def outputs(name: str) -> tuple[str, str]:
    """File suffixes of an artifact: figures as PDF and PNG, tables as CSV and Markdown."""
    return ("pdf", "png") if ARTIFACTS[name].kind == "figure" else ("csv", "md")
