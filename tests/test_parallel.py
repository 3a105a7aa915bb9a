"""Per-matrix work side by side: order, errors, thread caps."""

import threading
import time

import pytest
import torch
from threadpoolctl import threadpool_info

from offprincipal.parallel import ordered_map, threads_per_worker


def test_ordered_map_returns_results_in_the_items_order_and_uses_the_workers():
    seen = set()

    def slow_square(i):
        seen.add(threading.get_ident())
        time.sleep(0.02 * (5 - i % 5))  # later items finish first
        return i * i

    assert list(ordered_map(slow_square, range(10), 3)) == [i * i for i in range(10)]
    assert len(seen) > 1


def test_ordered_map_raises_the_first_error_and_starts_no_more_items():
    started = []

    def work(i):
        started.append(i)
        if i == 2:
            raise ValueError("matrix 2 is bad")
        time.sleep(0.05)
        return i

    with pytest.raises(ValueError, match="matrix 2 is bad"):
        list(ordered_map(work, range(40), 2))
    assert len(started) < 10


def test_threads_per_worker_caps_torch_and_blas_inside_the_block_only():
    torch.set_num_threads(2)
    with threads_per_worker(1):
        assert torch.get_num_threads() == 1
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(n == 1 for n in blas)
    assert torch.get_num_threads() == 2
