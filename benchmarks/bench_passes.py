#!/usr/bin/env python
"""Performance benchmark of the two heavy passes on a real-model-sized synthetic pair.

    .venv/bin/python benchmarks/bench_passes.py --model ds-r1-distill-qwen-1.5b [--ft-dtype float32]
    .venv/bin/python benchmarks/bench_passes.py --model qwen3-8b --delete-after

1. Generates locally (no network), once, a (base, fine-tuned) pair with the exact tensor
   names and shapes of the real model, as sharded safetensors + index + minimal
   config.json, under ``--workdir`` (default ``benchmarks/out/``, git-ignored). Base: bf16,
   ~N(0, 0.02) (RMSNorm weights 1 + N(0, 0.02)). Fine-tuned: the base with ~40% of entries
   moved by one bf16 ULP (a bf16-realized update), stored in bf16 or, with
   ``--ft-dtype float32``, in fp32 with sub-half-ULP noise added (so it rounds back to the
   same bf16 values, like an fp32 RL checkpoint such as DeepScaleR). Generation is tensor
   by tensor, in row chunks, and writes one shard (<= ``--shard-gb``) at a time.
2. (a) sparsity pass: ``offprincipal.analysis.compare_pair`` in a child process, beside two
   baselines -- the reader alone (``iter_pairs`` exactly as compare_pair calls it, touching
   every page of every tensor and nothing else) and a plain sequential read of the shard
   files in 64 MiB chunks -- with a cold page cache (``drop_caches``) and a warm one.
   (b) spectral pass: ``compute_spectra`` (fp64, top-k 128 by default) on a checkpoint
   holding only ``--layers`` (same shapes), beside the bare SVDs of the same matrices
   (``numpy.linalg.svd`` -> LAPACK gesdd, and ``torch.linalg.svd``) with no I/O; peak RSS
   for one block vs two blocks.
3. Prints a table plus machine info; ``--json PATH`` writes the same figures as JSON.

Every timing runs ``--repeats`` times (default 2) and the minimum is reported. Each child
gets ``--threads`` (default 2) threads: ``OMP/OPENBLAS/MKL_NUM_THREADS`` and
``torch.set_num_threads``. Peak RSS is the child's own ``VmHWM`` (not ``ru_maxrss``: a
vfork+exec'd child inherits the parent's high-water mark there); because safetensors
memory-maps shards, RSS includes file-backed pages, so peak anonymous (``RssAnon``) and
file-backed (``RssFile``) memory are also sampled from ``/proc`` every ``--sample-ms`` and
reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _threads_from_argv() -> int:
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return int(os.environ.get("OMP_NUM_THREADS", "2"))


# thread counts must be fixed before numpy / torch load their BLAS
_THREADS = _threads_from_argv() if "--child" not in sys.argv else int(os.environ.get("OMP_NUM_THREADS", "2"))
for _v in _THREAD_VARS:
    os.environ[_v] = str(_THREADS)

import torch  # noqa: E402

torch.set_num_threads(_THREADS)

GB = 1e9
GiB = 2**30
MiB = 2**20
RESULT_TAG = "@@BENCH_RESULT@@ "
PERTURB_FRACTION = 0.4  # share of entries moved by one bf16 ULP
FP32_NOISE = 2.0**-10  # relative noise of the fp32 fine-tuned side, < half a bf16 ULP
RECIPE_VERSION = 3
ALL_KINDS = ("q", "k", "v", "o", "gate", "up", "down")


# ============================================================================ model shapes


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str  # "qwen2" | "qwen3"
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    default_layers: tuple[int, ...]
    default_kinds: tuple[str, ...]
    rms_eps: float = 1e-6

    def config_json(self) -> dict:
        base = {
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate,
            "rms_norm_eps": self.rms_eps,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "max_position_embeddings": 131072 if self.arch == "qwen2" else 40960,
            "_offprincipal_benchmark": "synthetic stand-in with the real tensor names/shapes; random values",
        }
        if self.arch == "qwen2":
            base.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", rope_theta=10000.0)
        else:
            base.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", rope_theta=1000000.0,
                        attention_bias=False)
        return base


MODELS = {
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (Qwen2): biases on q/k/v, untied lm_head
    "ds-r1-distill-qwen-1.5b": ModelSpec(
        "ds-r1-distill-qwen-1.5b", "qwen2", vocab=151936, hidden=1536, layers=28, heads=12, kv_heads=2,
        head_dim=128, intermediate=8960, default_layers=(13,), default_kinds=ALL_KINDS,
    ),
    # Qwen/Qwen3-8B: q_norm/k_norm, no biases, untied lm_head
    "qwen3-8b": ModelSpec(
        "qwen3-8b", "qwen3", vocab=151936, hidden=4096, layers=36, heads=32, kv_heads=8,
        head_dim=128, intermediate=12288, default_layers=(18,), default_kinds=("q", "k", "v", "o"),
    ),
}


def tensor_specs(m: ModelSpec) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) in Hugging Face module order (the order save_pretrained shards in)."""
    H, I, q, kv = m.hidden, m.intermediate, m.heads * m.head_dim, m.kv_heads * m.head_dim
    out = [("model.embed_tokens.weight", (m.vocab, H))]
    for i in range(m.layers):
        p = f"model.layers.{i}."
        attn = [(p + "self_attn.q_proj.weight", (q, H))]
        if m.arch == "qwen2":
            attn += [(p + "self_attn.q_proj.bias", (q,))]
        attn += [(p + "self_attn.k_proj.weight", (kv, H))]
        if m.arch == "qwen2":
            attn += [(p + "self_attn.k_proj.bias", (kv,))]
        attn += [(p + "self_attn.v_proj.weight", (kv, H))]
        if m.arch == "qwen2":
            attn += [(p + "self_attn.v_proj.bias", (kv,))]
        attn += [(p + "self_attn.o_proj.weight", (H, q))]
        if m.arch == "qwen3":
            attn += [(p + "self_attn.q_norm.weight", (m.head_dim,)), (p + "self_attn.k_norm.weight", (m.head_dim,))]
        mlp = [(p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
               (p + "mlp.down_proj.weight", (H, I))]
        norms = [(p + "input_layernorm.weight", (H,)), (p + "post_attention_layernorm.weight", (H,))]
        out += attn + mlp + norms
    out += [("model.norm.weight", (H,)), ("lm_head.weight", (m.vocab, H))]
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ============================================================================ generation


def _name_seed(name: str, seed: int) -> int:
    h = 1469598103934665603 ^ seed
    for ch in name.encode():
        h = ((h ^ ch) * 1099511628211) % (2**61 - 1)
    return h


CHUNK = 1 << 24  # elements generated at a time (bounded memory)


def make_tensor(name: str, shape, seed: int, ft_dtype: torch.dtype | None):
    """(base bf16, ft bf16-or-fp32) for one tensor; deterministic in (name, seed)."""
    # independent streams, so the base values do not depend on what the ft side draws
    gen = torch.Generator().manual_seed(_name_seed(name, seed))
    gen_step = torch.Generator().manual_seed(_name_seed(name, seed + 1))
    gen_noise = torch.Generator().manual_seed(_name_seed(name, seed + 2))
    n = _numel(shape)
    is_norm = name.endswith("norm.weight")
    base = torch.empty(n, dtype=torch.bfloat16)
    ft = torch.empty(n, dtype=ft_dtype) if ft_dtype is not None else None
    buf = torch.empty(min(n, CHUNK))
    cut = int(round(PERTURB_FRACTION * 256))
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        b = buf[: e - s]
        torch.randn(e - s, generator=gen, out=b)
        b.mul_(0.02)
        if is_norm:
            b.add_(1.0)
        base[s:e].copy_(b)
        if ft is None:
            continue
        # one random byte per entry: < cut -> changed; low bit -> direction (±1 ULP)
        r = torch.randint(-(2**63), 2**63 - 1, ((e - s + 7) // 8,), dtype=torch.int64, generator=gen_step).view(torch.uint8)[: e - s]
        changed = r < cut
        bits = base[s:e].view(torch.int16)
        # down one ULP only where |w| > 0: ±0 minus one would wrap to a NaN bit pattern
        down = changed & (r & 1).bool() & ((bits & 0x7FFF) != 0)
        step = changed.to(torch.int16) - 2 * down.to(torch.int16)
        ftb = (bits + step).view(torch.bfloat16)
        if ft_dtype == torch.bfloat16:
            ft[s:e].copy_(ftb)
        else:  # fp32 with noise below half a bf16 ULP: rounds back to ftb
            noise = torch.rand(e - s, generator=gen_noise).mul_(2 * FP32_NOISE).sub_(FP32_NOISE).add_(1.0)
            ft[s:e].copy_(ftb.float().mul_(noise))
    return base.view(shape), (ft.view(shape) if ft is not None else None)


def shard_plan(specs, elem_bytes: int, max_bytes: int) -> list[list[str]]:
    """Greedy split in module order, like transformers' ``split_torch_state_dict_into_shards``."""
    shards, cur, size = [], [], 0
    for name, shape in specs:
        nb = _numel(shape) * elem_bytes
        if cur and size + nb > max_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(name)
        size += nb
    if cur:
        shards.append(cur)
    return shards


class ShardedWriter:
    """Writes one checkpoint's shards as they fill; at most one shard's tensors held."""

    def __init__(self, directory: Path, plan: list[list[str]], config: dict, dtype_name: str):
        from safetensors.torch import save_file

        self._save = save_file
        self.dir = directory
        self.plan = plan
        self.n = len(plan)
        self.owner = {name: i for i, names in enumerate(plan) for name in names}
        self.pending: dict[int, dict[str, torch.Tensor]] = {}
        self.weight_map: dict[str, str] = {}
        self.total = 0
        cfg = dict(config, torch_dtype=dtype_name)
        (directory / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    def fname(self, i: int) -> str:
        return f"model-{i + 1:05d}-of-{self.n:05d}.safetensors"

    def add(self, name: str, t: torch.Tensor) -> None:
        i = self.owner[name]
        d = self.pending.setdefault(i, {})
        d[name] = t.contiguous()
        self.weight_map[name] = self.fname(i)
        self.total += t.numel() * t.element_size()
        if len(d) == len(self.plan[i]):
            self._save(d, str(self.dir / self.fname(i)), metadata={"format": "pt"})
            del self.pending[i]

    def finish(self) -> None:
        assert not self.pending, f"unwritten shards {sorted(self.pending)}"
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _recipe(spec: ModelSpec, side: str, seed: int, shard_gb: float) -> dict:
    return {"model": spec.name, "side": side, "seed": seed, "shard_gb": shard_gb, "version": RECIPE_VERSION,
            "perturb_fraction": PERTURB_FRACTION}


def _ready(d: Path, recipe: dict) -> bool:
    marker = d / "bench_recipe.json"
    try:
        return json.loads(marker.read_text()) == recipe
    except (OSError, ValueError):
        return False


def ensure_pair(spec: ModelSpec, root: Path, ft_dtype_name: str, seed: int, shard_gb: float, log) -> dict:
    """Generate (or reuse) base + ft checkpoints; return manifest paths and sizes."""
    from offprincipal.io import atomic_dir, write_json

    mdir = root / spec.name
    mdir.mkdir(parents=True, exist_ok=True)
    sides = {"base": ("bfloat16", mdir / "base"), "ft": (ft_dtype_name, mdir / f"ft-{ft_dtype_name}")}
    recipes = {k: _recipe(spec, f"{k}-{dt}", seed, shard_gb) for k, (dt, _) in sides.items()}
    todo = [k for k, (_, d) in sides.items() if not _ready(d, recipes[k])]
    specs = tensor_specs(spec)
    if todo:
        total = sum(_numel(s) for _, s in specs)
        need = sum(total * (2 if sides[k][0] == "bfloat16" else 4) for k in todo)
        free = shutil.disk_usage(mdir).free
        if free < need * 1.05:
            raise SystemExit(f"need {need / GB:.1f} GB on {mdir} to generate {todo}, only {free / GB:.1f} GB free")
        log(f"generating {spec.name} {todo} ({total / 1e9:.2f}B params, {need / GB:.1f} GB) under {mdir} ...")
        t0 = time.perf_counter()
        ft_dtype = getattr(torch, ft_dtype_name)
        with _nested_atomic([sides[k][1] for k in todo], atomic_dir) as tmps:
            writers = {}
            for k, tmp in zip(todo, tmps):
                dt = sides[k][0]
                ebytes = 2 if dt == "bfloat16" else 4
                writers[k] = ShardedWriter(tmp, shard_plan(specs, ebytes, int(shard_gb * GB)), spec.config_json(), dt)
            for j, (name, shape) in enumerate(specs):
                base, ft = make_tensor(name, shape, seed, ft_dtype if "ft" in writers else None)
                if "base" in writers:
                    writers["base"].add(name, base)
                if "ft" in writers:
                    writers["ft"].add(name, ft)
                if j % 50 == 0:
                    log(f"  {j}/{len(specs)} tensors, {time.perf_counter() - t0:.0f}s")
            for k, w in writers.items():
                w.finish()
                (w.dir / "bench_recipe.json").write_text(json.dumps(recipes[k]) + "\n")
        log(f"generated in {time.perf_counter() - t0:.0f}s")
    manifests = {}
    for k, (dt, d) in sides.items():
        mpath = mdir / f"{d.name}.json"
        write_json(mpath, {"name": f"{spec.name}-{d.name}", "path": str(d)})
        manifests[k] = str(mpath)
    files = {k: sorted(str(p) for p in d.glob("*.safetensors")) for k, (_, d) in sides.items()}
    nbytes = {k: sum(os.path.getsize(f) for f in v) for k, v in files.items()}
    return {"manifests": manifests, "files": files, "bytes": nbytes, "dirs": {k: str(d) for k, (_, d) in sides.items()}}


class _nested_atomic:
    def __init__(self, paths, atomic_dir):
        self.cms = [atomic_dir(p) for p in paths]

    def __enter__(self):
        self.entered = []
        try:
            for cm in self.cms:
                self.entered.append((cm, cm.__enter__()))
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return [t for _, t in self.entered]

    def __exit__(self, *exc):
        for cm, _ in reversed(self.entered):
            cm.__exit__(*exc)
        return False


def ensure_subset(pair: dict, spec: ModelSpec, layers: tuple[int, ...], root: Path, log) -> dict:
    """A base checkpoint holding only the tensors of ``layers`` (same names, shapes, dtype)."""
    from safetensors.torch import save_file

    from offprincipal.checkpoints.reader import Checkpoint
    from offprincipal.io import atomic_dir, write_json

    tag = "L" + "-".join(str(i) for i in layers)
    d = root / spec.name / f"subset-base-{tag}"
    recipe = {"from": pair["dirs"]["base"], "layers": list(layers), "version": RECIPE_VERSION,
              "source_recipe": json.loads((Path(pair["dirs"]["base"]) / "bench_recipe.json").read_text())}
    if not _ready(d, recipe):
        log(f"writing layer subset {tag} -> {d}")
        with Checkpoint(pair["dirs"]["base"]) as ck, atomic_dir(d) as tmp:
            names = [n for n in ck.names() if ck.info(n).layer in layers]
            save_file({n: ck.load(n).clone() for n in names}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(spec.config_json(), indent=2) + "\n")
            (tmp / "bench_recipe.json").write_text(json.dumps(recipe) + "\n")
    mpath = root / spec.name / f"subset-base-{tag}.json"
    write_json(mpath, {"name": f"{spec.name}-base-{tag}", "path": str(d)})
    return {"manifest": str(mpath), "dir": str(d)}


# ============================================================================ child side


def _proc_status(pid: int | str = "self") -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _touch_pages(t: torch.Tensor) -> int:
    """Fault in every 4 KiB page of ``t`` (reads one byte per page); returns a checksum."""
    flat = t.reshape(-1).view(torch.uint8)
    return int(flat[::4096].sum())


def _scan_bytes(t: torch.Tensor) -> int:
    """Read every byte of ``t`` once (a vectorised int64 sum over its bytes)."""
    flat = t.reshape(-1).view(torch.uint8)
    if flat.numel() % 8 == 0:
        return int(flat.view(torch.int64).sum())
    return int(flat.sum())


def child_reader(a: dict) -> dict:
    from offprincipal.analysis import open_checkpoint
    from offprincipal.checkpoints.reader import iter_pairs

    t0, c0 = time.perf_counter(), time.process_time()
    n = nbytes = 0
    with open_checkpoint(a["base"]) as base, open_checkpoint(a["ft"]) as ft:
        touch = _scan_bytes if a.get("scan") else _touch_pages
        for tp in iter_pairs(base, ft, dtype=torch.bfloat16, device="cpu"):
            touch(tp.base)
            touch(tp.ft)
            n += 1
            nbytes += tp.base.numel() * (tp.base_dtype.itemsize + tp.ft_dtype.itemsize)
    return {"seconds": time.perf_counter() - t0, "call_cpu_s": time.process_time() - c0, "tensors": n, "bytes": nbytes}


def child_compare(a: dict) -> dict:
    from offprincipal.analysis import compare_pair

    out = Path(a["out"])
    kw = dict(updates_csv=out / "updates.csv", masks_npz=out / "masks.npz", device="cpu")
    prof = None
    if a.get("profile"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    table = compare_pair(a["base"], a["ft"], **kw)
    dt = time.perf_counter() - t0
    res = {"seconds": dt, "call_cpu_s": time.process_time() - c0, "tensors": len(table), "numel": int(table["numel"].sum()),
           "changed_eta": int(table["changed_eta"].sum()), "changed_abs": int(table["changed_abs"].sum())}
    if prof is not None:
        import io
        import pstats

        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(a.get("profile_top", 18))
        res["profile"] = s.getvalue()
    return res


def child_spectra(a: dict) -> dict:
    from offprincipal.analysis import compute_spectra

    t0, c0 = time.perf_counter(), time.process_time()
    compute_spectra(a["manifest"], a["out"], kinds=a["kinds"], top_k=a["top_k"], svd_dtype="float64",
                    cast_to_bf16=True, device="cpu")
    return {"seconds": time.perf_counter() - t0, "call_cpu_s": time.process_time() - c0}


def child_lapack(a: dict) -> dict:
    """Bare SVDs of the same matrices, no I/O in the timed region: numpy (gesdd) and torch."""
    import numpy as np

    from offprincipal.analysis import matrix_names, open_checkpoint

    with open_checkpoint(a["manifest"]) as ck:
        mats = {n: ck.load(n).to(torch.bfloat16).clone() for n in matrix_names(ck, a["kinds"])}
    per = {}
    for rep in range(a["repeats"]):
        for n, w in mats.items():
            x64 = w.float().numpy().astype(np.float64)
            t0, c0 = time.perf_counter(), time.process_time()
            np.linalg.svd(x64, full_matrices=False)
            t_np, c_np = time.perf_counter() - t0, time.process_time() - c0
            del x64
            xt = w.to(torch.float64)
            t0, c0 = time.perf_counter(), time.process_time()
            torch.linalg.svd(xt, full_matrices=False)
            t_t, c_t = time.perf_counter() - t0, time.process_time() - c0
            # the same SVD with LAPACK always seeing a tall matrix (svd of the transpose when
            # m < n; U and V swap roles), as offprincipal.metrics.spectral.spectrum calls it
            t0, c0 = time.perf_counter(), time.process_time()
            if xt.shape[0] < xt.shape[1]:
                torch.linalg.svd(xt.T, full_matrices=False)
            else:
                torch.linalg.svd(xt, full_matrices=False)
            t_tall, c_tall = time.perf_counter() - t0, time.process_time() - c0
            del xt
            p = per.setdefault(n, {"shape": list(w.shape), "numpy": [], "torch": [], "torch_tall": [],
                                   "numpy_cpu": [], "torch_cpu": [], "torch_tall_cpu": []})
            p["numpy"].append(t_np)
            p["torch"].append(t_t)
            p["torch_tall"].append(t_tall)
            p["numpy_cpu"].append(c_np)
            p["torch_cpu"].append(c_t)
            p["torch_tall_cpu"].append(c_tall)
    return {
        "per_matrix": per,
        "numpy_seconds": sum(min(p["numpy"]) for p in per.values()),
        "torch_seconds": sum(min(p["torch"]) for p in per.values()),
        "torch_tall_seconds": sum(min(p["torch_tall"]) for p in per.values()),
        "numpy_cpu_s": sum(min(p["numpy_cpu"]) for p in per.values()),
        "torch_cpu_s": sum(min(p["torch_cpu"]) for p in per.values()),
        "torch_tall_cpu_s": sum(min(p["torch_tall_cpu"]) for p in per.values()),
        "numpy_runs": [sum(p["numpy"][r] for p in per.values()) for r in range(a["repeats"])],
        "torch_runs": [sum(p["torch"][r] for p in per.values()) for r in range(a["repeats"])],
        "numpy_config": _numpy_blas(),
    }


CHILD_TASKS = {"reader": child_reader, "compare": child_compare, "spectra": child_spectra, "lapack": child_lapack}


def child_main(task: str, args_json: str) -> None:
    start = _proc_status()
    res = CHILD_TASKS[task](json.loads(args_json))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    # ru_maxrss of a vfork+exec'd child includes the parent's high-water mark at exec time;
    # VmHWM belongs to the child's own (post-exec) address space
    res["ru_maxrss"] = ru.ru_maxrss * 1024
    res["vm_hwm"] = _proc_status().get("VmHWM", res["ru_maxrss"])
    res["cpu_s"] = ru.ru_utime + ru.ru_stime  # whole child (imports included)
    res["user_s"], res["sys_s"] = ru.ru_utime, ru.ru_stime
    res["start_status"] = start
    res["end_status"] = _proc_status()
    res["torch_threads"] = torch.get_num_threads()
    sys.stdout.write(RESULT_TAG + json.dumps(res) + "\n")
    sys.stdout.flush()


# ============================================================================ parent side


def run_child(task: str, args: dict, sample_s: float, threads: int) -> dict:
    env = dict(os.environ)
    for v in _THREAD_VARS:
        env[v] = str(threads)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task, json.dumps(args)]
    t0 = time.perf_counter()
    with ForeignLoad() as load:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        while p.poll() is None:
            st = _proc_status(p.pid)
            for k in peak:
                peak[k] = max(peak[k], st.get(k, 0))
            time.sleep(sample_s)
        out, err = p.communicate()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"child {task} failed ({p.returncode}):\n{err[-4000:]}")
    line = next(l for l in out.splitlines()[::-1] if l.startswith(RESULT_TAG))
    res = json.loads(line[len(RESULT_TAG):])
    res["process_wall"] = wall
    res["sampled_peak"] = peak
    res["other_load"] = load.share(res.get("cpu_s", 0.0))
    return res


def drop_caches() -> tuple[bool, str]:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True, "ok"
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (steal counted as busy)."""
    try:
        with open("/proc/stat") as fh:
            vals = [int(x) for x in fh.readline().split()[1:9]]
    except OSError:
        return 0, 0
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NCPU = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def wait_idle(threshold: float, max_wait: float, log) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` of the CPUs,
    measured over 1 s; return the last measured busy share."""
    t0 = time.monotonic()
    share = 0.0
    while True:
        b0, _ = _cpu_jiffies()
        time.sleep(1.0)
        b1, _ = _cpu_jiffies()
        share = (b1 - b0) / _HZ / _NCPU
        if share < threshold or time.monotonic() - t0 >= max_wait:
            if share >= threshold:
                log(f"    machine still busy ({share:.0%} of {_NCPU} CPUs used by others) after {max_wait:.0f}s; measuring anyway")
            return share
        time.sleep(2.0)


class ForeignLoad:
    """Share of the machine's CPU time used by *other* processes over a measured interval."""

    def __enter__(self):
        self.b0, _ = _cpu_jiffies()
        self.own0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        b1, _ = _cpu_jiffies()
        own1 = resource.getrusage(resource.RUSAGE_SELF)
        self.busy = (b1 - self.b0) / _HZ
        self.own = (own1.ru_utime - self.own0.ru_utime) + (own1.ru_stime - self.own0.ru_stime)
        return False

    def share(self, child_cpu: float = 0.0) -> float:
        return max(0.0, (self.busy - self.own - child_cpu) / (self.wall * _NCPU)) if self.wall > 0 else 0.0


def cat_read(files: list[str], chunk: int = 64 * MiB) -> float:
    buf = bytearray(chunk)
    mv = memoryview(buf)
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(mv):
                pass
    return time.perf_counter() - t0


def cached_fraction(files: list[str]) -> float | None:
    """Share of the files' pages resident in the page cache (``mincore``); None if unavailable."""
    try:
        import ctypes
        import mmap

        import numpy as np

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        page = os.sysconf("SC_PAGE_SIZE")
        total = cached = 0
        for f in files:
            size = os.path.getsize(f)
            if size == 0:
                continue
            npages = (size + page - 1) // page
            vec = bytearray(npages)
            with open(f, "rb") as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY) as mm:
                anchor = ctypes.c_char.from_buffer(mm)  # MAP_PRIVATE: writable view, file untouched
                try:
                    rc = libc.mincore(ctypes.addressof(anchor), size, (ctypes.c_char * npages).from_buffer(vec))
                finally:
                    del anchor
            if rc != 0:
                return None
            cached += int((np.frombuffer(vec, dtype=np.uint8) & 1).sum())
            total += npages
        return cached / total if total else None
    except Exception:
        return None


def _numpy_blas() -> str:
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["lapack"]
        return f"{b.get('name')} {b.get('version')}"
    except Exception:
        return "?"


def machine_info(threads: int, workdir: Path) -> dict:
    import numpy as np

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    cfg = torch.__config__.show()
    torch_lapack = "MKL" if "USE_MKL=ON" in cfg or "LAPACK is enabled (usually provided by MKL)" in cfg else "?"
    du = shutil.disk_usage(workdir)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "ram_bytes": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_lapack": torch_lapack,
        "numpy": np.__version__,
        "numpy_lapack": _numpy_blas(),
        "disk_free_bytes": du.free,
        "kernel": platform.release(),
    }


def _fmt_b(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f} GiB"


# ============================================================================ the passes


def _timed(fn, args, log) -> dict:
    """Wait for a quiet machine, run ``fn`` (returns a result dict with ``seconds``), attach load."""
    before = wait_idle(args.idle_threshold, args.idle_wait, log) if args.idle_wait > 0 else None
    with ForeignLoad() as load:
        r = fn()
    r.setdefault("other_load", load.share())
    r["busy_before"] = before
    return r


def bench_sparsity(pair: dict, args, log) -> dict:
    base_files, ft_files = pair["files"]["base"], pair["files"]["ft"]
    files = base_files + ft_files
    nbytes = pair["bytes"]["base"] + pair["bytes"]["ft"]
    mem_avail = _proc_meminfo("MemAvailable")
    fits = nbytes < 0.8 * (mem_avail or 0)
    ok, why = drop_caches() if "cold" in args.cache else (False, "not tried")
    caches = []
    if "cold" in args.cache:
        if ok:
            caches.append("cold")
        else:
            log(f"drop_caches failed ({why}): cold-cache runs skipped")
    if "warm" in args.cache:
        if fits:
            caches.append("warm")
        else:
            log(f"pair ({nbytes / GB:.1f} GB) does not fit in the page cache ({(mem_avail or 0) / GB:.1f} GB available):"
                " warm-cache runs skipped")
    out = Path(args.workdir) / "results" / f"{args.model}-ft-{args.ft_dtype}"
    out.mkdir(parents=True, exist_ok=True)
    man = {"base": pair["manifests"]["base"], "ft": pair["manifests"]["ft"]}
    sample = args.sample_ms / 1e3
    rows = {}
    variants = [v for v in ("cat", "reader", "scan", "compare") if v in args.sparsity_variants]
    for cache in caches:
        for v in variants:
            runs = []
            for rep in range(args.repeats):
                def one():
                    if cache == "cold":
                        drop_caches()
                    else:
                        cat_read(files)  # warm it
                    pre = cached_fraction(files)
                    if v == "cat":
                        with ForeignLoad() as ld:
                            sec = cat_read(files)
                        r = {"seconds": sec, "cpu_s": ld.own, "call_cpu_s": ld.own, "other_load": ld.share()}
                    elif v in ("reader", "scan"):
                        r = run_child("reader", {**man, "scan": v == "scan"}, sample, args.threads)
                    else:
                        r = run_child("compare", {**man, "out": str(out)}, sample, args.threads)
                    r["cached_before"] = pre
                    return r

                r = _timed(one, args, log)
                runs.append(r)
                log(f"  sparsity {v:8s} {cache}: {r['seconds']:.2f}s (cpu {r.get('call_cpu_s', 0):.1f}s, other load "
                    f"{r['other_load']:.0%})"
                    + (f", peak RSS {_fmt_b(r['vm_hwm'])} (anon {_fmt_b(r['sampled_peak']['RssAnon'])},"
                       f" file {_fmt_b(r['sampled_peak']['RssFile'])})" if "ru_maxrss" in r else ""))
            if runs:
                rows[(v, cache)] = _summarise(runs, nbytes)
    res = {"bytes_read": nbytes, "fits_page_cache": fits, "drop_caches": {"worked": ok, "detail": why},
           "rows": [{"variant": v, "cache": c, **s} for (v, c), s in rows.items()]}
    for cache in caches:
        c = rows.get(("compare", cache))
        for base_v, key in (("scan", "reader"), ("reader", "touch"), ("cat", "cat")):
            r = rows.get((base_v, cache))
            if c and r:
                res[f"ratio_compare_over_{key}_{cache}"] = c["seconds"] / r["seconds"]
    done = [rows[("compare", c)] for c in caches if ("compare", c) in rows]
    if done:
        ex = done[-1]["extra"]
        res["changed_fraction_eta"] = ex["changed_eta"] / ex["numel"]
        res["changed_fraction_abs"] = ex["changed_abs"] / ex["numel"]
        res["tensors"] = ex["tensors"]
    if args.profile:
        log("  profiling compare_pair (cProfile, warm cache if it fits) ...")

        def prof():
            if fits:
                cat_read(files)
            return run_child("compare", {**man, "out": str(out), "profile": True}, sample, args.threads)

        r = _timed(prof, args, log)
        res["profile"] = r["profile"]
        res["profile_seconds"] = r["seconds"]
        res["profile_other_load"] = r["other_load"]
    return res


def _summarise(runs: list[dict], nbytes: int) -> dict:
    best = min(runs, key=lambda r: r["seconds"])
    s = {"seconds": best["seconds"], "runs": [r["seconds"] for r in runs], "gb_per_s": nbytes / GB / best["seconds"],
         "cpu_s": min(r.get("call_cpu_s", r.get("cpu_s", 0.0)) for r in runs), "other_load": best["other_load"],
         "other_load_runs": [r["other_load"] for r in runs], "cached_before": [r.get("cached_before") for r in runs]}
    if "ru_maxrss" in best:
        s["peak_rss"] = max(r["vm_hwm"] for r in runs)
        s["peak_anon"] = max(r["sampled_peak"]["RssAnon"] for r in runs)
        s["peak_file"] = max(r["sampled_peak"]["RssFile"] for r in runs)
        s["start_rss"] = best["start_status"].get("VmRSS")
        s["process_wall"] = best["process_wall"]
    s["extra"] = {k: v for k, v in best.items() if k in ("tensors", "numel", "changed_eta", "changed_abs")}
    return s


def _proc_meminfo(key: str) -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_SVD_KEYS = ("numpy", "torch", "torch_tall", "numpy_cpu", "torch_cpu", "torch_tall_cpu")


def bench_spectral(pair: dict, spec: ModelSpec, args, log) -> dict:
    root = Path(args.workdir)
    layers = tuple(args.layers)
    kinds = list(args.kinds)
    sub = ensure_subset(pair, spec, layers, root, log)
    out = root / "results" / f"{args.model}-spectra-L{'-'.join(map(str, layers))}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    from offprincipal.analysis import matrix_names, open_checkpoint

    with open_checkpoint(sub["manifest"]) as ck:
        names = matrix_names(ck, kinds)
        shapes = {n: ck.shape(n) for n in names}
    largest = max(_numel(s) for s in shapes.values()) * 8
    sample = args.sample_ms / 1e3
    runs, laps = [], []
    for rep in range(args.repeats):  # interleaved, so both see the same machine conditions
        r = _timed(lambda: run_child("spectra", {"manifest": sub["manifest"], "out": str(out), "kinds": kinds,
                                                 "top_k": args.top_k}, sample, args.threads), args, log)
        runs.append(r)
        log(f"  compute_spectra {len(names)} matrices: {r['seconds']:.2f}s (other load {r['other_load']:.0%}),"
            f" peak RSS {_fmt_b(r['vm_hwm'])} (anon {_fmt_b(r['sampled_peak']['RssAnon'])})")
        lap = _timed(lambda: run_child("lapack", {"manifest": sub["manifest"], "kinds": kinds, "repeats": 1},
                                       sample, args.threads), args, log)
        laps.append(lap)
        log(f"  bare SVD: numpy {lap['numpy_seconds']:.2f}s, torch {lap['torch_seconds']:.2f}s, torch tall "
            f"{lap['torch_tall_seconds']:.2f}s (other load {lap['other_load']:.0%})")
    best = min(runs, key=lambda r: r["seconds"])
    per = {}
    for lap in laps:
        for n, p in lap["per_matrix"].items():
            q = per.setdefault(n, {"shape": p["shape"], **{k: [] for k in _SVD_KEYS}})
            for k in _SVD_KEYS:
                q[k] += p[k]
    bare = {k: sum(min(p[k]) for p in per.values()) for k in _SVD_KEYS}
    cs_cpu = min(r["call_cpu_s"] for r in runs)
    res = {
        "layers": list(layers), "kinds": kinds, "top_k": args.top_k, "matrices": {n: list(s) for n, s in shapes.items()},
        "largest_matrix_fp64_bytes": largest,
        "compute_spectra": {"seconds": best["seconds"], "runs": [r["seconds"] for r in runs], "cpu_s": cs_cpu,
                            "other_load_runs": [r["other_load"] for r in runs],
                            "peak_rss": max(r["vm_hwm"] for r in runs),
                            "peak_anon": max(r["sampled_peak"]["RssAnon"] for r in runs),
                            "start_rss": best["start_status"].get("VmRSS")},
        "numpy_svd": {"seconds": bare["numpy"], "cpu_s": bare["numpy_cpu"], "runs": [l["numpy_seconds"] for l in laps],
                      "lapack": laps[0]["numpy_config"]},
        "torch_svd": {"seconds": bare["torch"], "cpu_s": bare["torch_cpu"], "runs": [l["torch_seconds"] for l in laps]},
        "torch_svd_tall": {"seconds": bare["torch_tall"], "cpu_s": bare["torch_tall_cpu"],
                           "runs": [l["torch_tall_seconds"] for l in laps]},
        "bare_other_load_runs": [l["other_load"] for l in laps],
        "per_matrix": per,
        "overhead_vs_numpy": best["seconds"] / bare["numpy"] - 1,
        "overhead_vs_torch": best["seconds"] / bare["torch"] - 1,
        "overhead_vs_torch_tall": best["seconds"] / bare["torch_tall"] - 1,
        "cpu_overhead_vs_numpy": cs_cpu / bare["numpy_cpu"] - 1,
        "cpu_overhead_vs_torch": cs_cpu / bare["torch_cpu"] - 1,
        "cpu_overhead_vs_torch_tall": cs_cpu / bare["torch_tall_cpu"] - 1,
    }
    if args.rss_check:
        nxt = max(layers) + 1 if max(layers) + 1 < spec.layers else min(layers) - 1
        two = tuple(sorted(set(layers) | {nxt}))
        sub2 = ensure_subset(pair, spec, two, root, log)
        out2 = root / "results" / f"{args.model}-spectra-L{'-'.join(map(str, two))}.safetensors"
        r2 = _timed(lambda: run_child("spectra", {"manifest": sub2["manifest"], "out": str(out2), "kinds": kinds,
                                                  "top_k": args.top_k}, sample, args.threads), args, log)
        log(f"  compute_spectra 2 blocks {two}: {r2['seconds']:.2f}s, peak RSS {_fmt_b(r2['vm_hwm'])}")
        res["two_blocks"] = {"layers": list(two), "seconds": r2["seconds"], "peak_rss": r2["vm_hwm"],
                             "peak_anon": r2["sampled_peak"]["RssAnon"], "start_rss": r2["start_status"].get("VmRSS"),
                             "other_load": r2["other_load"]}
    return res


# ============================================================================ report


def _runs(xs) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def print_report(rep: dict) -> None:
    m = rep["machine"]
    print()
    print(f"== offprincipal pass benchmark: {rep['model']} (ft {rep['ft_dtype']}) ==")
    print(f"machine: {m['cpu']}, {m['cores']} cores (affinity {m['affinity']}), threads {m['threads']} "
          f"(torch {m['torch_threads']}), RAM {m['ram_bytes'] / GiB:.1f} GiB, torch {m['torch']} "
          f"(LAPACK {m['torch_lapack']}), numpy {m['numpy']} ({m['numpy_lapack']}), disk free "
          f"{m['disk_free_bytes'] / GB:.0f} GB; checkpoints: base {rep['checkpoint_bytes']['base'] / GB:.2f} GB in "
          f"{rep['shards']['base']} shards, ft {rep['checkpoint_bytes']['ft'] / GB:.2f} GB in {rep['shards']['ft']} shards")
    print("wall = minimum over runs; cpu = CPU seconds of the timed call (min over runs); other% = share of the CPUs used by other processes during the run with the minimum wall")
    sp = rep.get("sparsity")
    if sp:
        dc = sp["drop_caches"]
        print(f"\n(a) sparsity pass: {sp.get('tensors', '?')} tensor pairs, {sp['bytes_read'] / GB:.2f} GB read; "
              f"drop_caches: {'worked' if dc['worked'] else 'FAILED (' + dc['detail'] + ')'}; the pair "
              f"{'fits' if sp['fits_page_cache'] else 'does NOT fit'} in the page cache")
        hdr = (f"{'variant':38s} {'cache':5s} {'wall s':>7s} {'GB/s':>6s} {'cpu s':>6s} {'other%':>6s} "
               f"{'peak RSS':>9s} {'anon':>9s} {'file':>9s}  all runs (s)")
        print(hdr)
        print("-" * len(hdr))
        label = {"cat": "sequential file read (64 MiB chunks)", "reader": "reader only: iter_pairs + touch pages",
                 "scan": "reader only: iter_pairs + read bytes", "compare": "compare_pair"}
        for r in sp["rows"]:
            g = lambda k: _fmt_b(r.get(k)).replace(" GiB", "G")  # noqa: E731
            print(f"{label[r['variant']]:38s} {r['cache']:5s} {r['seconds']:7.2f} {r['gb_per_s']:6.2f} "
                  f"{(r.get('cpu_s') or 0):6.1f} {r['other_load'] * 100:5.0f}% {g('peak_rss'):>9s} {g('peak_anon'):>9s} "
                  f"{g('peak_file'):>9s}  {_runs(r['runs'])}")
        for c in ("cold", "warm"):
            parts = [f"{lbl} {sp[k]:.1f}x" for k, lbl in ((f"ratio_compare_over_reader_{c}", "/ reader(read bytes)"),
                                                         (f"ratio_compare_over_touch_{c}", "/ reader(touch)"),
                                                         (f"ratio_compare_over_cat_{c}", "/ sequential read"))
                     if k in sp]
            if parts:
                print(f"compare_pair {c}: " + ", ".join(parts))
        if "changed_fraction_eta" in sp:
            print(f"changed fraction: eta rule {sp['changed_fraction_eta']:.4f}, abs 1e-5 {sp['changed_fraction_abs']:.4f}")
        if "profile" in sp:
            print(f"\ncProfile of compare_pair ({sp['profile_seconds']:.1f}s under the profiler, other load "
                  f"{sp['profile_other_load']:.0%}), top by tottime:")
            print(sp["profile"].rstrip())
    spc = rep.get("spectral")
    if spc:
        cs = spc["compute_spectra"]
        print(f"\n(b) spectral pass: layers {spc['layers']}, kinds {','.join(spc['kinds'])}, top_k {spc['top_k']}, fp64, "
              f"{len(spc['matrices'])} matrices; largest matrix in fp64 {spc['largest_matrix_fp64_bytes'] / MiB:.0f} MiB")
        hdr = f"{'what':48s} {'wall s':>7s} {'cpu s':>7s} {'peak RSS':>9s} {'anon':>9s}  all runs (s) [other%]"
        print(hdr)
        print("-" * len(hdr))
        print(f"{'compute_spectra (child process, incl. I/O)':48s} {cs['seconds']:7.2f} {cs['cpu_s']:7.1f} "
              f"{_fmt_b(cs['peak_rss']).replace(' GiB', 'G'):>9s} {_fmt_b(cs['peak_anon']).replace(' GiB', 'G'):>9s}  "
              f"{_runs(cs['runs'])} [{', '.join(f'{x:.0%}' for x in cs['other_load_runs'])}]")
        ol = f" [{', '.join(f'{x:.0%}' for x in spc['bare_other_load_runs'])}]"
        for key, lbl in (("numpy_svd", f"numpy.linalg.svd ({spc['numpy_svd']['lapack']})"),
                         ("torch_svd", "torch.linalg.svd on the stored shape"),
                         ("torch_svd_tall", "torch.linalg.svd, tall (thin_svd)")):
            print(f"{lbl:48s} {spc[key]['seconds']:7.2f} {spc[key]['cpu_s']:7.1f} {'':>9s} {'':>9s}  "
                  f"{_runs(spc[key]['runs'])}{ol}")
        print(f"overhead = compute_spectra / bare SVD - 1: vs numpy {spc['overhead_vs_numpy'] * 100:+.0f}%, vs torch "
              f"{spc['overhead_vs_torch'] * 100:+.0f}%, vs torch-tall {spc['overhead_vs_torch_tall'] * 100:+.0f}% "
              f"(target: within +15%)")
        print(f"same in CPU time: vs numpy {spc['cpu_overhead_vs_numpy'] * 100:+.0f}%, vs torch "
              f"{spc['cpu_overhead_vs_torch'] * 100:+.0f}%, vs torch-tall {spc['cpu_overhead_vs_torch_tall'] * 100:+.0f}%")
        print("per matrix (min over runs):")
        for n, p in spc["per_matrix"].items():
            print(f"   {n:42s} {'x'.join(map(str, p['shape'])):>11s}  numpy {min(p['numpy']):7.2f}s  torch "
                  f"{min(p['torch']):7.2f}s  torch-tall {min(p['torch_tall']):7.2f}s")
        if "two_blocks" in spc:
            tb = spc["two_blocks"]
            print(f"streaming: peak RSS 1 block {_fmt_b(cs['peak_rss'])} (anon {_fmt_b(cs['peak_anon'])}) vs 2 blocks "
                  f"{tb['layers']} {_fmt_b(tb['peak_rss'])} (anon {_fmt_b(tb['peak_anon'])}); child RSS after imports "
                  f"{_fmt_b(cs['start_rss'])}; largest matrix fp64 {spc['largest_matrix_fp64_bytes'] / MiB:.0f} MiB; "
                  f"2 blocks took {tb['seconds']:.1f}s (other load {tb['other_load']:.0%})")


# ============================================================================ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="ds-r1-distill-qwen-1.5b")
    ap.add_argument("--ft-dtype", choices=("bfloat16", "float32"), default="bfloat16")
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "out"))
    ap.add_argument("--passes", default="sparsity,spectral", help="comma list of sparsity, spectral")
    ap.add_argument("--sparsity-variants", default="cat,reader,scan,compare",
                    help="comma list of cat (sequential file read), reader (iter_pairs + touch every page), "
                         "scan (iter_pairs + read every byte), compare (compare_pair)")
    ap.add_argument("--cache", default="cold,warm", help="comma list of cold, warm (page cache state)")
    ap.add_argument("--layers", default=None, help="decoder layers for the spectral subset (default: model's middle block)")
    ap.add_argument("--kinds", default=None, help="matrix kinds for the spectral pass (default: all 7 for 1.5B, q,k,v,o for 8B)")
    ap.add_argument("--top-k", type=int, default=128)
    ap.add_argument("--no-rss-check", dest="rss_check", action="store_false",
                    help="skip the 2-block compute_spectra run that checks RSS does not grow with matrices")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shard-gb", type=float, default=2.0, help="max shard size when generating (GB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-ms", type=float, default=20.0, help="RSS sampling period of children")
    ap.add_argument("--idle-threshold", type=float, default=0.25,
                    help="before each timed run, wait until other processes use less than this share of the CPUs")
    ap.add_argument("--idle-wait", type=float, default=90.0, help="longest wait for an idle machine per run (s); 0: never wait")
    ap.add_argument("--profile", action="store_true", help="also run compare_pair under cProfile and print the top")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--delete-after", action="store_true", help="delete the generated pair after measuring")
    ap.add_argument("--json", default=None, help="write the figures as JSON here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    spec = MODELS[args.model]
    args.layers = tuple(int(x) for x in args.layers.split(",")) if args.layers else spec.default_layers
    args.kinds = tuple(args.kinds.split(",")) if args.kinds else spec.default_kinds
    args.cache = tuple(x for x in args.cache.split(",") if x)
    args.sparsity_variants = tuple(args.sparsity_variants.split(","))
    passes = set(args.passes.split(","))
    bad = [l for l in args.layers if not 0 <= l < spec.layers]
    if bad:
        ap.error(f"--layers {bad} outside 0..{spec.layers - 1}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    rep = {"model": args.model, "ft_dtype": args.ft_dtype, "machine": machine_info(args.threads, workdir),
           "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}}
    pair = ensure_pair(spec, workdir, args.ft_dtype, args.seed, args.shard_gb, log)
    rep["checkpoint_bytes"] = pair["bytes"]
    rep["shards"] = {k: len(v) for k, v in pair["files"].items()}
    if args.generate_only:
        print(json.dumps(rep["checkpoint_bytes"]))
        return 0
    try:
        if "sparsity" in passes:
            log("sparsity pass ...")
            rep["sparsity"] = bench_sparsity(pair, args, log)
        if "spectral" in passes:
            log("spectral pass ...")
            rep["spectral"] = bench_spectral(pair, spec, args, log)
    finally:
        if args.delete_after:
            mdir = workdir / spec.name
            log(f"deleting {mdir}")
            shutil.rmtree(mdir, ignore_errors=True)
    print_report(rep)
    if args.json:
        from offprincipal.io import write_json

        write_json(args.json, rep)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
