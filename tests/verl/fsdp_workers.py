"""Per-rank bodies of the 2-rank FSDP2-over-gloo tests (spawned by torch.multiprocessing)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch


def setup(rank: int, world: int, port: int):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    # verl's fsdp2_clip_grad_norm_ moves the norm to get_device_id(), which is "cuda" on any
    # machine without an accelerator (verl falls back to its nvidia platform); point that one
    # device lookup at the CPU -- the clipping itself is verl's
    import verl.utils.fsdp_utils as fsdp_utils

    fsdp_utils.get_device_id = lambda: "cpu"
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (world,), mesh_dim_names=("fsdp",))


def fsdp2_model(base: str, mesh, *, lora: dict | None = None):
    """The base in fp32 (verl's master weights), wrapped with verl's own apply_fsdp2."""
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from transformers import AutoModelForCausalLM
    from verl.utils.fsdp_utils import apply_fsdp2

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", bias="none", **lora))
    mp = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    apply_fsdp2(model, {"mesh": mesh, "mp_policy": mp}, {})
    return model


def masked_engine(model, *, lr: float, weight_decay: float, strategy: str = "fsdp2"):
    """A MaskedFSDPEngine around an FSDP2 model: verl's own optimizer builder and config classes;
    the parts of FSDPEngine.__init__ that need a GPU (device mesh on cuda, model loading) are
    replaced by the model built above."""
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig
    from verl.workers.config.optimizer import build_optimizer

    from offprincipal.training.verl_mask_plugin import MaskedFSDPEngine

    optim = FSDPOptimizerConfig(lr=lr, weight_decay=weight_decay, clip_grad=1.0)
    engine = MaskedFSDPEngine.__new__(MaskedFSDPEngine)
    engine.module = model
    engine.optimizer = build_optimizer(model.parameters(), optim)
    engine.optimizer_config = optim
    engine.engine_config = FSDPEngineConfig(strategy=strategy)
    engine.model_config = SimpleNamespace(lora_rank=0)
    engine._qat_enabled = False
    engine.scaler = None
    return engine


def batch(rank: int, vocab: int):
    g = torch.Generator().manual_seed(100 + rank)  # each data-parallel rank its own batch
    return torch.randint(3, vocab, (4, 10), generator=g)


def train_masked(rank, world, port, base, mask_path, out, restore, report_dir, steps, ckpt_dir):
    from offprincipal.training.masks import load_masks

    mesh = setup(rank, world, port)
    torch.manual_seed(0)
    model = fsdp2_model(base, mesh)
    engine = masked_engine(model, lr=1e-2, weight_decay=0.1)
    engine.install_masks(load_masks(mask_path), source=mask_path)
    engine._write_report(report_dir)
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    ids = batch(rank, model.config.vocab_size)
    norms = []
    for _ in range(steps):
        engine.optimizer_zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        if restore:
            norms.append(engine.optimizer_step())  # mask -> verl's clip + AdamW -> restore
        else:  # the control: masked gradients, verl's step, no restore
            engine.mask_gradients()
            norms.append(FSDPEngineWithLMHead.optimizer_step(engine))
    state = {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()}
    if ckpt_dir:
        save_checkpoint(model, engine.optimizer, ckpt_dir, base)
    if rank == 0:
        torch.save({"state": state, "norms": norms}, out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def save_checkpoint(model, optimizer, ckpt_dir, base):
    """verl's FSDPCheckpointManager, as the trainer calls it (model + optimizer + extra)."""
    from transformers import AutoTokenizer
    from verl.trainer.config import CheckpointConfig
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    manager = FSDPCheckpointManager(
        model=model, optimizer=optimizer, lr_scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        processing_class=AutoTokenizer.from_pretrained(base),
        checkpoint_config=CheckpointConfig(save_contents=["model", "optimizer", "extra"], load_contents=["model"]),
    )
    manager.save_checkpoint(local_path=ckpt_dir, global_step=1)


def train_lora(rank, world, port, base, ckpt_dir, out, lora, steps):
    mesh = setup(rank, world, port)
    torch.manual_seed(0)
    model = fsdp2_model(base, mesh, lora=lora)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    ids = batch(rank, model.config.vocab_size)
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    state = {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()}
    save_checkpoint(model, opt, ckpt_dir, base)
    if rank == 0:
        torch.save({"state": state}, out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
