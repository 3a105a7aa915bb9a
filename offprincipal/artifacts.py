"""The paper's artifacts that need only checkpoints: what each shows and what it reads.

Each artifact is a function of the pairs the config lists under ``artifacts.<name>.pairs``,
so the default (synthetic / toy) config and the paper config render the same artifacts from
different inputs. ``needs`` names the per-pair files the workflow must provide:

* ``updates``  — ``pairs/{pair}/updates.csv`` (per-tensor sparsity)
* ``geometry`` — ``pairs/{pair}/geometry.csv`` and ``angles.csv``
* ``masks``    — ``pairs/{pair}/masks.npz``
* ``spectra``  — the base and fine-tuned SVD caches of each pair
* ``jaccard``  — ``crossrun/{artifact}.csv`` over the artifact's pairs (one Jaccard per run pair)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    kind: str  # "figure" (pdf + png) or "table" (csv + md)
    needs: tuple[str, ...]
    title: str
    caption: str


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
    ),
    "table2": Artifact(
        "table",
        ("jaccard",),
        "Table 2 — cross-run Jaccard of update masks in one block",
        "Pairwise Jaccard similarity of the bf16 update masks of independent RL runs from the same base, "
        "restricted to one decoder block, beside the value expected if each run updated entries "
        "independently at its own density (pq/(p+q-pq)). Pooled = sum |A and B| / sum |A or B| over the "
        "block's matrices.",
    ),
    "fig1c": Artifact(
        "figure",
        ("geometry",),
        "Fig. 1c — RL rotates less and preserves the spectrum",
        "Per decoder block: the largest principal angle between the base's and the fine-tuned model's "
        "top-k singular subspaces (left, U, and right, V, averaged over the block's matrices) and the "
        "normalized spectrum shift NSS, for RL and SFT pairs.",
    ),
    "fig2": Artifact(
        "figure",
        ("masks",),
        "Fig. 2 — consensus of update masks across RL runs",
        "For chosen weight matrices: the share of runs that updated each entry (consensus ratio), and the "
        "distribution of that count beside the one expected if runs updated entries independently "
        "(Poisson-binomial from each run's density). Rows are output units, columns input features "
        "(torch's [out, in] layout).",
    ),
    "fig4": Artifact(
        "figure",
        ("geometry", "spectra"),
        "Fig. 4 — spectrum and principal subspaces under SFT vs RL",
        "Left: singular values of a chosen matrix for each checkpoint. Middle: NSS per matrix by layer. "
        "Right: largest principal angle of the top-k left and right singular subspaces as k grows.",
    ),
    "fig5": Artifact(
        "figure",
        ("geometry",),
        "Fig. 5 — RL updates avoid principal weights and prefer low-magnitude weights",
        "Per decoder block: share of updated entries that lie in the principal mask (top-alpha of "
        "|rank-k reconstruction of W0|) and in the low-magnitude mask (bottom-alpha of |W0|); the dashed "
        "line is the random baseline, the mask density alpha.",
    ),
    "fig7": Artifact(
        "figure",
        ("geometry",),
        "Fig. 7 — principal overlap without its low-magnitude part",
        "Share of updated entries in the principal mask, in the principal-and-not-low-magnitude mask, and "
        "in the low-magnitude mask, over all matrices of each pair, each against its own random baseline "
        "(the mask's density).",
    ),
    "fig8": Artifact(
        "figure",
        ("geometry",),
        "Fig. 8 — principal-subspace rotation of agent RL checkpoints",
        "Largest principal angle between base and fine-tuned top-k singular subspaces per decoder block, "
        "left (U) and right (V), for the agent checkpoints of Table 3.",
    ),
    "fig12": Artifact(
        "figure",
        ("jaccard",),
        "Fig. 12 — cross-run Jaccard of update masks",
        "Pairwise Jaccard of the bf16 update masks of RL runs from one base, over all analysed matrices, "
        "and the independent-Bernoulli baseline for the same densities.",
    ),
    "fig13": Artifact(
        "figure",
        ("geometry",),
        "Fig. 13 — off-principal updates of zero-RL checkpoints",
        "As Fig. 5, for zero-RL (SimpleRL-Zoo) checkpoints of other model families.",
    ),
    "fig16": Artifact(
        "figure",
        ("geometry", "spectra"),
        "Fig. 16 — spectrum preservation, SFT vs RL (DS-R1-Distill-Qwen-1.5B family)",
        "As Fig. 4, for the DeepSeek-R1-Distill-Qwen-1.5B family.",
    ),
    "fig17": Artifact(
        "figure",
        ("geometry", "spectra"),
        "Fig. 17 — spectrum preservation, SFT vs RL (Qwen3-14B family)",
        "As Fig. 4, for the Qwen3-14B-Base family (UniReason SFT vs RL).",
    ),
    "fig18": Artifact(
        "figure",
        ("geometry",),
        "Fig. 18 — principal-subspace rotation of RLHF checkpoints",
        "As Fig. 8, for the RLHF (DPO, SimPO) checkpoints of Table 3.",
    ),
}


def outputs(name: str) -> tuple[str, str]:
    """File suffixes of an artifact: figures as PDF and PNG, tables as CSV and Markdown."""
    return ("pdf", "png") if ARTIFACTS[name].kind == "figure" else ("csv", "md")
