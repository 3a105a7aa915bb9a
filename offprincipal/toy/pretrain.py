"""Pretrain the toy world's base model: a small Qwen3 trained on the arithmetic corpus.

The base is REAL (trained by next-token prediction), not planted: a ``Qwen3ForCausalLM``
with grouped-query attention (several query heads share each KV head, so head permutations
are meaningful) trained with the ``transformers`` ``Trainer`` (AdamW, fp32 master weights,
cosine schedule with warmup, gradient clipping) on ``pretrain.jsonl`` written by
:func:`offprincipal.toy.task.build_datasets`: worked solutions (and some bare answers) of
easier problems with a smaller share of harder ones, the RL task's difficulty included but
never its held-out problems.

The checkpoint is saved like a released one: Hugging Face layout, bf16 ``model.safetensors``,
``config.json``, ``generation_config.json``, the tokenizer files, and ``RECORD_NAME`` (the
recipe and the measured metrics: wall time, loss curve, and how far training moved the
weights from their initialisation; its accuracy is measured by the evaluation stage). It is written atomically, and its weights are a deterministic function of
the recipe on one machine (fixed seed, fixed data order, fixed thread count).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from offprincipal.io import atomic_dir
from offprincipal.toy import task as T
from offprincipal.toy.tokenizer import build_tokenizer

RECORD_NAME = "offprincipal_pretrain.json"
WEIGHTS_NAME = "model.safetensors"

#: the default recipe: 198,784 parameters (4 layers, width 64, 4 query / 2 KV heads of dim 16,
#: MLP 192, tied embeddings), 1500 AdamW steps x 128 documents (~3 epochs of the default
#: 60k-document corpus, ~2.8M tokens). Measured on the default datasets (seed 0 / seed 1, one
#: thread): pass@1 on the RL task's 256 held-out problems 43% / 38% greedy, 29% / 26% sampled
#: at T=1, inside the 10-60% headroom band with margin; ~130 CPU-seconds of training. Fewer
#: steps fall off quickly (1000 steps of a 96-wide model on an earlier mixture: 16% greedy);
#: more steps or width climb toward the band's top (96-wide, 1500 steps: 41-52% greedy).
DEFAULT_RECIPE = dict(
    hidden_size=64,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=192,
    steps=1500,
    batch_size=128,
    row_len=64,
    lr=3e-3,
    min_lr_ratio=0.1,
    warmup_steps=60,
    weight_decay=0.01,
    adam_betas=(0.9, 0.98),
    max_grad_norm=1.0,
    rope_theta=10000.0,
)


# ----------------------------------------------------------------------------- data


class _Corpus(torch.utils.data.Dataset):
    def __init__(self, ids: list[list[int]]):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i]}


class PackCollator:
    """Pack a batch of documents into rows of at most ``row_len`` tokens (no cross-talk).

    Documents are placed in batch order, each appended to the current row while it fits.
    ``position_ids`` restart at 0 for every document and no attention mask is passed, so the
    model's mask builder (``transformers.masking_utils``) makes the attention block-diagonal
    causal: a document never attends to its neighbours, exactly as if it were alone in its
    own padded row, but without the padding (the documents are 5..40 tokens long). The label
    of each document's first token is -100, so no document is trained to follow another.
    Rows are right-padded with ``pad_id`` (label -100, positions 0.. forming their own block).
    """

    def __init__(self, pad_id: int, row_len: int = 64):
        self.pad_id = pad_id
        self.row_len = row_len

    def __call__(self, rows: list[dict]) -> dict:
        packed: list[tuple[list[int], list[int], list[int]]] = []
        for r in rows:
            ids = list(r["input_ids"])
            if packed and len(packed[-1][0]) + len(ids) <= self.row_len:
                row = packed[-1]
            else:
                row = ([], [], [])
                packed.append(row)
            row[0].extend(ids)
            row[1].extend(range(len(ids)))
            row[2].extend([-100] + ids[1:])
        width = max(len(p[0]) for p in packed)
        input_ids = torch.full((len(packed), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(packed), width), -100, dtype=torch.long)
        position_ids = torch.zeros((len(packed), width), dtype=torch.long)
        for i, (ids, pos, lab) in enumerate(packed):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids)
            labels[i, :n] = torch.tensor(lab)
            position_ids[i, :n] = torch.tensor(pos)
            position_ids[i, n:] = torch.arange(width - n)
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}


# ----------------------------------------------------------------------------- model


def make_config(tokenizer, *, hidden_size, num_layers, num_heads, num_kv_heads, head_dim,
                intermediate_size, rope_theta=10000.0, max_position_embeddings=128):
    from transformers import Qwen3Config

    if num_heads % num_kv_heads:
        raise ValueError("num_heads must be a multiple of num_kv_heads")
    if head_dim < 8:
        raise ValueError("head_dim must be at least 8")
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        rope_theta=rope_theta,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


def _init_model(config, seed: int):
    from transformers import Qwen3ForCausalLM, set_seed

    set_seed(seed)
    model = Qwen3ForCausalLM(config)
    return model.float()


def _spectral_shift(init_model, trained_model) -> dict:
    """How far training moved the projections: relative change and spectrum shape."""

    def top_ratio(w):
        s = torch.linalg.svdvals(w.double())
        return float(s[0] / s.mean()), float((s[0] ** 2) / (s**2).sum())

    init = dict(init_model.named_parameters())
    out: dict = {"per_tensor": {}}
    agg: dict[str, list] = {}
    for name, w in trained_model.named_parameters():
        if w.ndim != 2 or "layers." not in name:
            continue
        w0 = init[name].detach().float()
        w1 = w.detach().float()
        proj = name.split(".")[-2]
        r0, e0 = top_ratio(w0)
        r1, e1 = top_ratio(w1)
        rec = {
            "rel_change": float((w1 - w0).norm() / w0.norm()),
            "sigma1_over_mean_init": r0,
            "sigma1_over_mean_trained": r1,
            "top_energy_init": e0,
            "top_energy_trained": e1,
        }
        out["per_tensor"][name] = rec
        agg.setdefault(proj, []).append(rec)
    out["by_projection"] = {
        p: {k: sum(r[k] for r in recs) / len(recs) for k in recs[0]} for p, recs in sorted(agg.items())
    }
    return out


# ----------------------------------------------------------------------------- training


def pretrain_base(
    out_dir: str | os.PathLike,
    datasets_dir: str | os.PathLike,
    *,
    seed: int = 0,
    hidden_size: int = DEFAULT_RECIPE["hidden_size"],
    num_layers: int = DEFAULT_RECIPE["num_layers"],
    num_heads: int = DEFAULT_RECIPE["num_heads"],
    num_kv_heads: int = DEFAULT_RECIPE["num_kv_heads"],
    head_dim: int | None = DEFAULT_RECIPE["head_dim"],
    intermediate_size: int = DEFAULT_RECIPE["intermediate_size"],
    steps: int = DEFAULT_RECIPE["steps"],
    batch_size: int = DEFAULT_RECIPE["batch_size"],
    row_len: int = DEFAULT_RECIPE["row_len"],
    lr: float = DEFAULT_RECIPE["lr"],
    min_lr_ratio: float = DEFAULT_RECIPE["min_lr_ratio"],
    warmup_steps: int = DEFAULT_RECIPE["warmup_steps"],
    weight_decay: float = DEFAULT_RECIPE["weight_decay"],
    adam_betas: tuple[float, float] = DEFAULT_RECIPE["adam_betas"],
    max_grad_norm: float = DEFAULT_RECIPE["max_grad_norm"],
    rope_theta: float = DEFAULT_RECIPE["rope_theta"],
    threads: int = 1,
    logging_steps: int = 50,
) -> dict:
    """Pretrain a Qwen3 base on ``datasets_dir/pretrain.jsonl``; save it to ``out_dir``.

    Returns the metrics (also stored in ``out_dir/RECORD_NAME`` with the recipe). The base's
    accuracy is measured by the evaluation stage (:mod:`offprincipal.evaluation`), like any
    checkpoint's.

    ``threads`` sets torch's intra-op threads for the run (restored afterwards). The default
    is 1: at this width a second thread gained only ~1.3x on an idle 2-core machine, while a
    2-thread run sharing its cores with other work (parallel Snakemake jobs, other users)
    slowed down ~20x (every small op waits on a descheduled partner thread).
    """
    from transformers import Trainer, TrainingArguments

    t_start = time.perf_counter()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        datasets_dir = Path(datasets_dir)
        manifest = json.loads((datasets_dir / T.MANIFEST_NAME).read_text())
        tokenizer = build_tokenizer()
        docs = T.load_pretrain(datasets_dir)
        ids = [tokenizer(d["text"])["input_ids"] for d in docs]
        if head_dim is None:
            head_dim = hidden_size // num_heads
        config = make_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                             num_kv_heads=num_kv_heads, head_dim=head_dim, intermediate_size=intermediate_size,
                             rope_theta=rope_theta, max_position_embeddings=max(128, max(map(len, ids))))
        model = _init_model(config, seed)
        init_model = _init_model(config, seed)  # the same initialisation, kept for comparison
        n_params = sum(p.numel() for p in model.parameters())

        with atomic_dir(out_dir) as tmp:
            args = TrainingArguments(
                output_dir=str(tmp / "_trainer"),
                max_steps=steps,
                per_device_train_batch_size=batch_size,
                learning_rate=lr,
                lr_scheduler_type="cosine_with_min_lr",
                lr_scheduler_kwargs={"min_lr_rate": min_lr_ratio},
                warmup_steps=warmup_steps,
                weight_decay=weight_decay,
                adam_beta1=adam_betas[0],
                adam_beta2=adam_betas[1],
                max_grad_norm=max_grad_norm,
                optim="adamw_torch",
                seed=seed,
                data_seed=seed,
                use_cpu=True,
                bf16=False,
                fp16=False,
                dataloader_num_workers=0,
                remove_unused_columns=False,
                logging_steps=logging_steps,
                save_strategy="no",
                eval_strategy="no",
                report_to="none",
                disable_tqdm=True,
            )
            # no KV cache in training: with one, the mask builder would not see the packing
            model.config.use_cache = False
            trainer = Trainer(model=model, args=args, train_dataset=_Corpus(ids),
                              data_collator=PackCollator(tokenizer.pad_token_id, row_len))
            t_train, c_train = time.perf_counter(), time.process_time()
            result = trainer.train()
            train_s, train_cpu_s = time.perf_counter() - t_train, time.process_time() - c_train
            losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
            shutil.rmtree(tmp / "_trainer", ignore_errors=True)

            model = trainer.model.float().eval()
            model.config.use_cache = True
            shift = _spectral_shift(init_model, model)
            model.generation_config.update(
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, max_new_tokens=48, do_sample=False,
            )
            model.to(torch.bfloat16).save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))

            metrics: dict = {
                "n_params": n_params,
                "train_wall_s": train_s,
                "train_cpu_s": train_cpu_s,
                "train_loss": float(result.training_loss),
                "final_loss": losses[-1][1] if losses else None,
                "loss_curve": losses,
                "tokens_seen": int(sum(len(x) for x in ids) / len(ids) * steps * batch_size),
                "spectral_shift": shift["by_projection"],
                "spectral_shift_per_tensor": shift["per_tensor"],
            }
            metrics["total_wall_s"] = time.perf_counter() - t_start
            recipe = {
                "seed": seed, "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                "num_kv_heads": num_kv_heads, "head_dim": head_dim, "intermediate_size": intermediate_size,
                "steps": steps, "batch_size": batch_size,
                "packing": f"documents packed into rows of <= {row_len} tokens, block-diagonal attention",
                "lr": lr, "min_lr_ratio": min_lr_ratio,
                "lr_schedule": "cosine with linear warmup", "warmup_steps": warmup_steps,
                "weight_decay": weight_decay, "adam_betas": list(adam_betas), "max_grad_norm": max_grad_norm,
                "optimizer": "AdamW (torch), fp32 master weights", "rope_theta": rope_theta,
                "threads": threads,
                "objective": "next-token prediction on every token of every document (prompt included)",
                "datasets_dir": str(datasets_dir), "pretrain_corpus": manifest.get("pretrain"),
                "datasets_seed": manifest.get("seed"), "tie_word_embeddings": True,
                "saved_dtype": "bfloat16",
            }
            record = {
                "kind": "toy pretrained base (trained, not synthetic)",
                "recipe": recipe,
                "metrics": metrics,
                "environment": {"torch": torch.__version__, "python": platform.python_version(),
                                "machine": platform.machine()},
            }
            (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            for f in tmp.iterdir():  # save_pretrained writes some files 0600; results are shared
                if f.is_file():
                    f.chmod(0o644)
        return metrics
    finally:
        torch.set_num_threads(prev_threads)
