"""Shared test setup: offline hub, deterministic seeds, tiny blocks."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def golden_dir() -> Path:
    return GOLDEN


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is faster, and far faster on a shared, busy CPU (opt in per module:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
