"""Wall-clock timing that is honest on GPUs: CUDA kernels run asynchronously, so a timer must wait for
them, or it measures kernel launches instead of work. Shared by the streaming engine and the benchmarks."""

from __future__ import annotations

import platform
import time

import torch


def synchronized_time(device: torch.device | str) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` has finished."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def describe_device(device: torch.device | str) -> str:
    """What a benchmark ran on, for its report: the GPU's name, or the CPU and its torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)"
    return f"{name}, torch {torch.__version__}"
