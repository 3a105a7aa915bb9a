"""Shared pieces of the tests that need verl 0.9.1 (run in .venv-verl: `make verl-test`)."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("verl", reason="tests/verl need the verl test environment (make verl-test)")

WORDS = [f"w{i}" for i in range(20)] + ["\\boxed{3}", "\\boxed{4}"]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny random Qwen3 (bf16 on disk, like a released base) with a word-level tokenizer."""
    from offprincipal.training.tiny import build_tiny_base

    path = tmp_path_factory.mktemp("verl_tiny") / "base"
    build_tiny_base(path, words=WORDS, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seed=0)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
