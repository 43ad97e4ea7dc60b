"""Keeps freed host memory in the process for reuse, where XLA:CPU runs the steps (glibc's malloc only).

XLA:CPU allocates each step's buffers with malloc and frees them when the step ends. glibc serves an
allocation above its mmap threshold (at most 32 MiB) or one from a worker thread's arena with a fresh
`mmap`, and returns it to the kernel on `free`, so every step touches its activations' pages for the
first time again, in page faults that cost the train step of EfficientNet-B0 at batch 16 most of a core.
With every thread on the main arena, no mmap and no trimming, a freed buffer is reused by the next step
(measured in docs/summary_and_bench.md, "Against timm on the CPU"). The cost is that the process keeps
its peak heap until it exits, which a training run does anyway.

It must run before the threads that allocate exist (an arena is chosen per thread on its first
allocation), so the command-line tools call it first; from Python, call `retain_freed_memory()` before
the first JAX computation. `EFFNETX_RETAIN_FREED_MEMORY=0` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# mallopt(3): -1 disables trimming completely. The largest positive int, used before, still returned the
# top of the heap beyond 2 GiB, which the train step of EfficientNet-B0 at batch 16 frees and touches
# again every step on some machines: a third of its time went to the kernel clearing those pages.
_NEVER_TRIM = -1
# Plugins that put the steps on an accelerator, where activations live in device memory instead.
_ACCELERATOR_PLUGINS = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu", "jax_rocm60_plugin")

_applied = False


def _steps_run_on_cpu() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def retain_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory (see the module docstring) when the steps run on the CPU;
    True if it did. Does nothing off Linux/glibc, on an accelerator, or with EFFNETX_RETAIN_FREED_MEMORY=0."""
    global _applied
    if _applied:
        return True
    if os.environ.get("EFFNETX_RETAIN_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if not _steps_run_on_cpu():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    _applied = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    return _applied
