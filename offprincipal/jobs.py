"""What every workflow script does first: send logs to the rule's log file, honour threads."""

from __future__ import annotations

import logging
import sys


def setup_job(log_path: str, threads: int | None = None) -> None:
    stream = open(log_path, "w", buffering=1)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    if threads:
        import torch

        torch.set_num_threads(threads)
