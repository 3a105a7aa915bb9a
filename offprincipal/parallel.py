"""Independent per-matrix work side by side in threads, each thread's libraries capped.

torch, LAPACK and BLAS release the GIL, so threads of one process run their calls in
parallel; each thread then gets its share of the cores in every thread pool (torch's,
OpenBLAS's for numpy/scipy) instead of all of them, so the pools do not oversubscribe.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

import torch
from threadpoolctl import threadpool_limits

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def threads_per_worker(threads: int) -> Iterator[None]:
    """Within the block torch and the BLAS libraries use ``threads`` threads per call."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(previous)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` of every item, ``workers`` at a time, results in the items' order. On the first
    error the items not yet started are dropped, the running ones finish, and it is raised."""
    if workers <= 1:  # no thread: errors and profiles read as in a plain loop
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="matrix")
    try:
        yield from pool.map(fn, items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
