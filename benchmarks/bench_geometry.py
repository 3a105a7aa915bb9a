#!/usr/bin/env python
"""Where the time of the pair-geometry pass goes, on one decoder block of real-model shapes.

    .venv/bin/python benchmarks/bench_geometry.py [--model ds-r1-distill-qwen-1.5b] [--repeats 3]

Builds in memory one block's seven matrices (q, k, v, o, gate, up, down) of the model's
shapes: a bf16 base ~N(0, 0.02) and a fine-tune with ~40% of entries moved by one bf16 ULP
(a bf16-realized update, full rank like most RL updates). Their spectra (fp64, top-k) are
computed once and not timed: that is the spectral pass. Then each step of
``offprincipal.analysis._matrix_geometry`` is timed alone per matrix -- the principal mask
(rank-k reconstruction + top-α selection), the low-magnitude mask, the overlaps, the two
principal-angle curves, NSS and the update rank -- and the sum is scaled to the whole model
(× number of blocks). Prints a table; ``--json PATH`` writes it too. A script that prints
figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from offprincipal.metrics.masks import low_magnitude_mask, overlaps, principal_mask  # noqa: E402
from offprincipal.metrics.spectral import (  # noqa: E402
    angle_curve,
    default_angle_ks,
    nss,
    spectrum,
    update_rank_ratio,
)

# (out, in) of each kind, torch's [out, in] convention, and the number of decoder blocks
MODELS = {
    "ds-r1-distill-qwen-1.5b": (28, {"q": (1536, 1536), "k": (256, 1536), "v": (256, 1536), "o": (1536, 1536),
                                     "gate": (8960, 1536), "up": (8960, 1536), "down": (1536, 8960)}),
    "qwen3-8b": (36, {"q": (4096, 4096), "k": (1024, 4096), "v": (1024, 4096), "o": (4096, 4096),
                      "gate": (12288, 4096), "up": (12288, 4096), "down": (4096, 12288)}),
}


def _pair(shape, gen):
    base = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
    move = torch.rand(shape, generator=gen) < 0.4
    bits = base.view(torch.int16)
    ft = torch.where(move, bits + 1, bits).view(torch.bfloat16)
    return base, ft, move


def _fp32_svd_rank(delta):
    """``matrix_rank``'s count (fp32 singular values above σ_max·max(m,n)·eps), tall side."""
    sv = torch.linalg.svdvals(delta if delta.shape[0] >= delta.shape[1] else delta.T.contiguous())
    return int(torch.count_nonzero(sv > sv[0] * max(delta.shape) * torch.finfo(torch.float32).eps))


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="ds-r1-distill-qwen-1.5b")
    ap.add_argument("--top-k", type=int, default=128)
    ap.add_argument("--principal-rank-k", type=int, default=128)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    blocks, shapes = MODELS[args.model]
    gen = torch.Generator().manual_seed(0)
    steps = ("principal_mask", "low_mask", "overlaps", "angles", "nss", "update_rank")
    # the update rank as it was before the full-rank certificate (fp32 SVD always), for comparison
    reference = "update_rank_svd_only"
    rows = {}
    for kind, shape in shapes.items():
        w0, w1, updated = _pair(shape, gen)
        s0, s1 = spectrum(w0, args.top_k), spectrum(w1, args.top_k)
        ks = default_angle_ks(min(args.top_k, min(shape)))
        princ = principal_mask(s0.U, s0.S, s0.V, k=args.principal_rank_k, alpha=args.alpha)
        low = low_magnitude_mask(w0, alpha=args.alpha)
        fns = {
            "principal_mask": lambda: principal_mask(s0.U, s0.S, s0.V, k=args.principal_rank_k, alpha=args.alpha),
            "low_mask": lambda: low_magnitude_mask(w0, alpha=args.alpha),
            "overlaps": lambda: overlaps({"princ": princ, "low": low, "princ_not_low": princ & ~low}, updated),
            "angles": lambda: [angle_curve(a, b, ks, s0.S, orthonormal=True) for a, b in ((s0.U, s1.U), (s0.V, s1.V))],
            "nss": lambda: nss(s0.S, s1.S),
            "update_rank": lambda: update_rank_ratio(w0, w1),
        }
        rows[kind] = {step: _best(fns[step], args.repeats) for step in steps}
        rows[kind][reference] = _best(lambda: _fp32_svd_rank(w1.float() - w0.float()), args.repeats)
        rows[kind]["update_rank_value"] = update_rank_ratio(w0, w1)
        print(f"{kind:>5} {shape}: " + "  ".join(f"{s} {rows[kind][s]:.3f} s" for s in steps), flush=True)
    block = {s: sum(r[s] for r in rows.values()) for s in steps}
    print(f"\n{args.model}, {args.threads} threads, best of {args.repeats}; one block, then × {blocks} blocks:")
    for s in steps:
        print(f"  {s:<15} {block[s]:7.3f} s   {block[s] * blocks:7.1f} s")
    total = sum(block.values())
    print(f"  {'total':<15} {total:7.3f} s   {total * blocks:7.1f} s")
    ref = sum(r[reference] for r in rows.values())
    print(f"  ({reference}: {ref:.3f} s per block, {ref * blocks:.1f} s in all)")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "threads": args.threads, "blocks": blocks,
                                               "per_matrix": rows, "block": block, reference: ref}, indent=1))


if __name__ == "__main__":
    main()
