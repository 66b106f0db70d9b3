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


def warm_up(device: torch.device | str, seconds: float = 3.0) -> None:
    """Keep a GPU busy for ``seconds`` before timing: an idle GPU runs at low clocks and ramps up under
    load, so the first seconds of a benchmark would otherwise read slow. No-op on a CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    end = synchronized_time(device) + seconds
    while synchronized_time(device) < end:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
