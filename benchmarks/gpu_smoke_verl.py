"""GPU smoke test of the verl backend: a few real verl 0.9.1 DAPO steps on a small local model.

For a GPU machine with the training environment (envs/training-requirements.txt) and no Hub
access. It builds everything it needs locally -- a toy arithmetic dataset written as verl
parquet, a random Qwen3 with the toy tokenizer -- and runs, through the pipeline's own
launcher (offprincipal.training.verl_backend.train, i.e. ``python -m verl.trainer.main_ppo``
with vLLM rollouts):

* ``masked``: DAPO under the safe mask with weight decay 0.1 -- the mask plugin loaded into
  the Ray workers by ``external_lib``, its per-rank activation records, each saved step merged
  by ``verl.model_merger`` and checked bitwise against the base;
* ``lora`` / ``pissa``: adapters through verl's keys (PiSSA initialised offline), each saved
  step folded from the fp32 shards.

Then the evaluation stage's vLLM path (``offprincipal.evaluation.evaluate`` with backend
``vllm``, lm-eval's VLLM model) on the base and the merged final checkpoints: the toy task and
AIME24 (a few problems, chat template on), checking k distinct samples per problem, engine
truncation flags and the result files.

For each run it checks the contract's metrics (steps 1..N once each, the KL column logged)
and, from verl's rollout dump (``trainer.rollout_data_dir``), that DAPO's overlong penalty
was applied: the v1 trainer logs no overlong metric, and the penalty is the one thing that
moves a +-1 score off +-1 (the check the reference notes ask for on the first GPU run).
Exit status 0 only if every check passed; a JSON summary is written to --out.

    python benchmarks/gpu_smoke_verl.py --work /tmp/smoke --out /tmp/smoke/summary.json
    python benchmarks/gpu_smoke_verl.py --runs masked          # one run (~ the start-up cost)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the Hub
TASK = "add_sub_d2"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def environment() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "gpus": torch.cuda.device_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for mod in ("verl", "vllm", "transformers", "peft", "transfer_queue"):
        try:
            info[mod] = getattr(__import__(mod), "__version__", "present")
        except ImportError as err:
            info[mod] = None
            info.setdefault("missing", []).append(f"{mod}: {err}")
    return info


def build_inputs(work: Path) -> tuple[Path, Path]:
    """A toy dataset in verl's parquet format and a random Qwen3 with the toy tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from offprincipal.io import atomic_dir
    from offprincipal.toy.task import build_datasets
    from offprincipal.toy.tokenizer import build_tokenizer
    from offprincipal.training.data import TRAIN_FILE, build_toy_dataset

    build_datasets(work / "toy_data", 0, tasks=[TASK], train_size=128, test_size=8, pretrain_size=8, rl_task=TASK)
    build_toy_dataset(TASK, TASK, work / "toy_data", work / "data", work / "data.json")
    tok = build_tokenizer()
    cfg = Qwen3Config(vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=64, max_position_embeddings=2048, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    with atomic_dir(work / "base") as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return work / "base", work / "data" / TRAIN_FILE


def spec_for(kind: str):
    from offprincipal.training import RunSpec

    common = dict(algorithm="dapo", seed=0, steps=3, save_steps=[2], lr=1e-4, weight_decay=0.1, prompts_per_step=8,
                  mini_batch_prompts=4, group_size=4, max_prompt_length=32, max_response_length=24,
                  overlong_buffer_len=8, mask_rank_k=8)
    if kind == "masked":
        return RunSpec(mask="safe", **common)
    if kind in ("lora", "pissa"):
        return RunSpec(adapter=kind, adapter_rank=8, adapter_alpha=16, **common)
    raise ValueError(f"unknown smoke run {kind!r}")


def overlong_share(rollout_dir: Path) -> dict:
    """Rollouts whose reward carries DAPO's overlong penalty. verl's v1 dump holds the final
    score (task reward +-1 plus the penalty) but not the penalty itself: a score other than
    +1 or -1 can only come from the penalty."""
    scores = []
    for path in sorted(rollout_dir.glob("*.jsonl")):
        scores += [float(json.loads(line)["score"]) for line in path.read_text().splitlines() if line.strip()]
    return {"rollouts": len(scores), "penalised": sum(s not in (1.0, -1.0) for s in scores),
            "min": min(scores) if scores else None, "max": max(scores) if scores else None}


def smoke_run(kind: str, work: Path, base: Path, data: Path, gpus: int) -> dict:
    from offprincipal.training import train
    from offprincipal.training.masks import masks_from_checkpoint, save_masks
    from offprincipal.training.merge import check_frozen, merge_step
    from offprincipal.training.pissa import init_pissa
    from offprincipal.training.run_directory import read_metrics

    spec = spec_for(kind)
    out = {"run": kind}
    mask_file = pissa_dir = None
    if spec.mask != "none":
        mask_file = work / f"{kind}.masks.npz"
        save_masks(mask_file, masks_from_checkpoint(base, spec.mask, alpha=spec.mask_alpha, rank_k=spec.mask_rank_k))
    if spec.adapter == "pissa":
        pissa_dir = work / "pissa"
        init_pissa(base, pissa_dir, rank=spec.adapter_rank, alpha=spec.adapter_alpha, target_modules=list(spec.adapter_target_modules))
    t0 = time.perf_counter()
    manifest = train(
        spec, base, work / "runs" / kind, backend="verl", state_dir=work / "state" / kind, train_files=[str(data)],
        experiment_name=f"smoke_{kind}", base_checkpoint="smoke_base", mask_file=mask_file, pissa_dir=pissa_dir,
        resources={"nnodes": 1, "n_gpus_per_node": gpus, "rollout_tensor_parallel": 1, "gpu_memory_utilization": 0.3},
        extra_overrides=(f"trainer.rollout_data_dir={work / 'rollouts' / kind}",),
    )
    out["train_seconds"] = time.perf_counter() - t0
    rows = read_metrics(work / "runs" / kind)
    out["steps_logged"] = [r["step"] for r in rows]
    out["kl_k3"] = [r.get("kl_k3") for r in rows]
    out["reward_mean"] = [r.get("reward_mean") for r in rows]
    out["checks"] = {
        "steps 1..N once": out["steps_logged"] == list(range(1, spec.steps + 1)),
        "kl logged every step": all(isinstance(v, (int, float)) and math.isfinite(v) for v in out["kl_k3"]),
    }
    out["overlong"] = overlong_share(work / "rollouts" / kind)
    out["checks"]["overlong penalty applied"] = out["overlong"]["penalised"] > 0
    for step in (2, "final"):
        name = "final" if step == "final" else f"step_{step}"
        merged = work / "merged" / kind / name
        info = merge_step(work / "runs" / kind, step, merged)
        out[f"merged_{name}"] = {k: info.get(k) for k in ("step", "modules", "zero_modules")}
        if mask_file is not None:
            report = check_frozen(base, merged, mask_file)
            out["checks"][f"frozen entries bitwise at {name}"] = report["ok"]
    if spec.mask != "none":
        out["mask"] = manifest.get("mask")
        out["checks"]["every rank ran the mask plugin"] = manifest["mask"]["ranks_reporting"] == gpus
    return out


#: the evaluation half: the toy task (raw prompt) and two AIME24 problems (chat template on)
SMOKE_SUITES = {
    "toy": {"tasks": {f"toy:{TASK}": {"k": 4}}, "temperature": 1.0, "top_p": 1.0, "max_gen_toks": 24,
            "chat_template": False},
    "aime24": {"tasks": {"aime24": {"k": 2}}, "temperature": 0.7, "top_p": 0.8, "max_gen_toks": 64,
               "chat_template": True, "limit": 2},
}


def smoke_evaluation(name: str, checkpoint: Path, work: Path) -> dict:
    from offprincipal.evaluation import evaluate

    out = {"checkpoint": name, "checks": {}}
    for suite_id, suite in SMOKE_SUITES.items():
        t0 = time.perf_counter()
        result = evaluate(checkpoint, suite=suite, backend="vllm",
                          backend_args={"tensor_parallel_size": 1, "gpu_memory_utilization": 0.3},
                          result_path=work / "eval" / suite_id / f"{name}.json",
                          samples_path=work / "eval" / suite_id / f"{name}.samples.jsonl.gz",
                          provenance={"smoke": True}, datasets_dir=work / "toy_data", checkpoint_id=name)
        (task, rec), = result["tasks"].items()
        out[suite_id] = {"seconds": time.perf_counter() - t0, "avg_at_k": rec["scores"][rec["primary"]]["avg_at_k"],
                         "truncation_rate": rec["truncation_rate"],
                         "mean_distinct_responses": rec["mean_distinct_responses"],
                         "max_model_len": result["backend"]["model_args"].get("max_model_len")}
        out["checks"][f"{suite_id}: k distinct samples"] = rec["mean_distinct_responses"] > 1
        out["checks"][f"{suite_id}: engine truncation flags"] = rec["truncation_rate"] is not None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/offprincipal_gpu_smoke"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--runs", default="masked,lora,pissa")
    ap.add_argument("--gpus", type=int, default=1)
    args = ap.parse_args()
    summary = {"environment": environment(), "runs": []}
    log(f"environment: {summary['environment']}")
    if summary["environment"].get("missing") or not summary["environment"]["cuda"]:
        log("the training environment is incomplete or no GPU is visible; nothing was run")
        ok = False
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        base, data = build_inputs(args.work)
        ok = True
        for kind in args.runs.split(","):
            log(f"run {kind}")
            try:
                result = smoke_run(kind, args.work, base, data, args.gpus)
            except Exception:
                result = {"run": kind, "error": traceback.format_exc(limit=20)}
            ok &= "error" not in result and all(result.get("checks", {}).values())
            summary["runs"].append(result)
            log(json.dumps(result, default=str)[:2000])
        checkpoints = {"base": base, **{r["run"]: args.work / "merged" / r["run"] / "final"
                                        for r in summary["runs"] if "error" not in r}}
        for name, path in checkpoints.items():
            log(f"evaluate {name} with vLLM")
            try:
                result = smoke_evaluation(name, path, args.work)
            except Exception:
                result = {"checkpoint": name, "error": traceback.format_exc(limit=20)}
            ok &= "error" not in result and all(result.get("checks", {}).values())
            summary.setdefault("evaluations", []).append(result)
            log(json.dumps(result, default=str)[:2000])
    summary["ok"] = ok
    out = args.out or args.work / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log(f"{'PASS' if ok else 'FAIL'}: summary in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
