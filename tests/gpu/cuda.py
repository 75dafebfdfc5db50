"""Whether this machine has an NVIDIA GPU with CUDA, asked without needing cupy or torch.

The GPU tests are skipped only when no CUDA device is found.  A machine with a
device but without a working cupy (the ``gpu`` extra) or a CUDA build of torch
fails those tests with a message naming the fix, instead of skipping them.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from types import ModuleType

import pytest

__all__ = ["NO_CUDA", "cuda_device_count", "need_cupy", "need_torch_cuda", "requires_cuda"]

NO_CUDA = "needs an NVIDIA GPU with CUDA: torch, cupy and nvidia-smi report no device"


def _torch_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def _cupy_devices() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # not installed, no driver, no device: all mean "none seen by cupy"
        return 0


def _nvidia_smi_devices() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    if listing.returncode != 0:
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


@functools.cache
def cuda_device_count() -> int:
    """CUDA devices that torch, cupy or ``nvidia-smi`` sees (the largest count); never raises."""
    return max(_torch_devices(), _cupy_devices(), _nvidia_smi_devices())


requires_cuda = pytest.mark.skipif(cuda_device_count() == 0, reason=NO_CUDA)
"""Skips a test on a machine without a CUDA device, saying so."""


def need_cupy() -> ModuleType:
    """cupy, running on a device; fails the test (a CUDA machine must run it) if it cannot."""
    from clara_ray.volume import CudaUnavailableError, cuda_array_module

    try:
        return cuda_array_module()
    except CudaUnavailableError as exc:
        pytest.fail(f"this machine has a CUDA device but cupy cannot use it: {exc}")


def need_torch_cuda() -> None:
    """Fails the test when torch cannot use the machine's CUDA device."""
    import torch

    if not torch.cuda.is_available():
        pytest.fail(
            f"this machine has a CUDA device but torch {torch.__version__} "
            f"(CUDA build {torch.version.cuda or 'none'}) sees no CUDA: install a CUDA build of torch"
        )
