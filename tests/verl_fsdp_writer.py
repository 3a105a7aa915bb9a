"""Write a verl-shaped FSDP2 checkpoint of a Hugging Face model directory, for real.

    python tests/verl_fsdp_writer.py MODEL_DIR RUN_DIR STEP [WORLD]

Spawns WORLD (default 2) processes on gloo; each loads the model, shards it with FSDP2's
``fully_shard`` (every decoder layer, then the root, as verl's FSDP2 engine wraps it), and
saves ``model.state_dict()`` -- the rank's DTensor shards -- with ``torch.save`` to
``RUN_DIR/global_step_STEP/actor/model_world_size_W_rank_R.pt``, as verl's
``FSDPCheckpointManager.save_checkpoint`` does, beside optimizer/extra-state files,
``fsdp_config.json`` and the ``huggingface/`` config folder (rank 0), ``data.pt`` and
``latest_checkpointed_iteration.txt``. Used by the tests; not part of the package.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, model_dir: str, actor: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.distributed.fsdp import fully_shard
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
        torch.save(model.state_dict(), f"{actor}/model_world_size_{world}_rank_{rank}.pt")
        torch.save(optim.state_dict(), f"{actor}/optim_world_size_{world}_rank_{rank}.pt")
        torch.save({"lr_scheduler": None, "rng": {}}, f"{actor}/extra_state_world_size_{world}_rank_{rank}.pt")
        if rank == 0:
            hf = Path(actor) / "huggingface"
            hf.mkdir()
            model.config.save_pretrained(hf)
            model.generation_config.save_pretrained(hf)
            for f in Path(model_dir).glob("tokenizer*"):
                shutil.copy(f, hf / f.name)
            (Path(actor) / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": world}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def write(model_dir: str, run_dir: str, step: int, world: int = 2) -> Path:
    actor = Path(run_dir) / f"global_step_{step}" / "actor"
    actor.mkdir(parents=True)
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(world, model_dir, str(actor), port), nprocs=world, join=True)
    torch.save({"dataloader": None}, actor.parent / "data.pt")
    (Path(run_dir) / "latest_checkpointed_iteration.txt").write_text(str(step))
    return actor


if __name__ == "__main__":
    args = sys.argv[1:]
    print(write(args[0], args[1], int(args[2]), int(args[3]) if len(args) > 3 else 2))
