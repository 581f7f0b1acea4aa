"""What a measurement ran on: enough to tell two targets apart and to reproduce a figure."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from typing import Any

from hwnas.backends.system import cpu_model, static_facts


@functools.cache
def nvidia_gpu() -> dict[str, str] | None:
    """Name and driver of the first NVIDIA GPU, from nvidia-smi; None where there is none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, _, driver = out[0].partition(",")
    return {"gpu": name.strip(), "driver": driver.strip()}


@functools.cache
def system_facts() -> dict[str, Any]:
    return static_facts()


def target_fingerprint(
    backend: str, backend_version: str, provider: str, threads: int, batch: int, precision: str, gpu: bool = False
) -> dict[str, Any]:
    fp: dict[str, Any] = {
        "backend": backend,
        "backend_version": backend_version,
        "provider": provider,
        "threads": threads,
        "batch": batch,
        "precision": precision,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "system": system_facts(),
    }
    if gpu:
        fp.update(nvidia_gpu() or {"gpu": "unknown", "driver": "unknown"})
    return fp
