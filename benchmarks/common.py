"""Shared helpers of the benchmark scripts: machine description, peak-memory probes, statistics."""

from __future__ import annotations

import os
import platform
import statistics

import torch


def machine() -> str:
    """One line describing the machine and the library versions."""
    import lightning

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"lightning {lightning.__version__}, Python {platform.python_version()}"
    )


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS counter of this process (Linux) and return the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status("VmRSS")


def current_rss() -> int:
    """Current RSS of this process, in bytes."""
    return _status("VmRSS")


def peak_rss() -> int:
    """Peak RSS of this process since the last :func:`reset_peak_rss`, in bytes."""
    return _status("VmHWM")


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def summary(values: list[float]) -> str:
    """Median and spread (min-max) of a list of timings."""
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"
