"""The host memory allocator of a process whose steps run on XLA:CPU: mimalloc where it can be preloaded, else
glibc's malloc kept from handing freed memory back to the kernel.

XLA:CPU allocates each step's buffers with malloc and frees them when the step ends, and YNNPACK, which runs
its dots and reductions, allocates scratch buffers of about 100 KiB by the thousand in every step. glibc's
malloc serves both badly:

- As it comes, it serves an allocation above its mmap threshold (at most 32 MiB), or one from a worker
  thread's arena, with a fresh `mmap` and returns it to the kernel on `free`, so every step touches its
  activations' pages for the first time again, in page faults that cost EfficientNet-B0's train step at
  batch 16 most of a core.
- With every thread on the main arena, no mmap and no trimming (`retain_freed_memory`), a freed buffer is
  reused by the next step without a page fault, but each of those scratch allocations then searches the
  one large heap's free chunks: 13-17% of the train step's CPU samples were in glibc's `_int_malloc`.

mimalloc keeps freed memory in per-thread, per-size pages and serves both kinds quickly. With it preloaded,
EfficientNet-B0's train step (batch 16, 224 px) ran at 24-26 img/s against 14-16 with glibc retaining
freed memory, with no page faults, and compiled in 26 s instead of 47 (docs/summary_and_bench.md, "Against
timm on the CPU"). Freed memory is kept in the process (`MIMALLOC_PURGE_DELAY=-1`, unless set already),
as a training run keeps its peak anyway.

A malloc cannot be swapped once the process runs, so `restart_with_mimalloc()` re-executes the program with
mimalloc in `LD_PRELOAD` (the same process id, arguments and environment); `set_up()`, which the
command-line tools call first, does that and falls back to `retain_freed_memory()`. From Python, call
`set_up()` first thing in a script (it restarts the script), or start the interpreter with `LD_PRELOAD` set
to `mimalloc_library()`; an interactive session (a REPL, IPython, a notebook's kernel) is never restarted,
so there `set_up()` before the first JAX computation gives glibc's fallback.

`EFFNETX_ALLOCATOR` chooses: `mimalloc` (the default; glibc with freed memory retained where mimalloc cannot
be preloaded), `glibc` (freed memory retained), or `system` (the process's allocator left as it is). It
applies only on Linux where the steps run on XLA:CPU (not with an accelerator plugin installed or
`JAX_PLATFORMS` naming another platform), and a `LD_PRELOAD` the user set is left alone. mimalloc is the
`cmeel-mimalloc` distribution's shared library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import sys

from effnetx_jax.errors import UserError

_ALLOCATOR_VARIABLE = "EFFNETX_ALLOCATOR"
_ALLOCATORS = ("mimalloc", "glibc", "system")
_MIMALLOC_DISTRIBUTION = "cmeel-mimalloc"
# mimalloc's own setting: -1 keeps freed memory in the process instead of returning it after 10 ms, which
# between two steps (an input wait, an evaluation) would cost page faults as glibc's returns did.
_MIMALLOC_KEEP_FREED = {"MIMALLOC_PURGE_DELAY": "-1"}

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# mallopt(3): -1 disables trimming completely. The largest positive int, used before, still returned the
# top of the heap beyond 2 GiB, which the train step of EfficientNet-B0 at batch 16 frees and touches
# again every step on some machines: a third of its time went to the kernel clearing those pages.
_NEVER_TRIM = -1
# Plugins that put the steps on an accelerator, where activations live in device memory instead.
_ACCELERATOR_PLUGINS = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu", "jax_rocm60_plugin")

_retained = False


def requested_allocator() -> str:
    """The `EFFNETX_ALLOCATOR` setting: 'mimalloc' (the default), 'glibc' or 'system'."""
    chosen = os.environ.get(_ALLOCATOR_VARIABLE, "mimalloc")
    if chosen not in _ALLOCATORS:
        raise UserError(f"{_ALLOCATOR_VARIABLE}={chosen!r}: expected one of {', '.join(_ALLOCATORS)}")
    return chosen


def check_settings() -> None:
    """Raises UserError for a bad `EFFNETX_ALLOCATOR` (the tools call it before any work)."""
    requested_allocator()


def _steps_run_on_cpu() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def _applies() -> bool:
    """Whether this process's allocator is ours to choose: Linux, steps on XLA:CPU, not `system`."""
    return sys.platform.startswith("linux") and requested_allocator() != "system" and _steps_run_on_cpu()


def mimalloc_library() -> str | None:
    """The path of the installed mimalloc shared library, or None where it is not installed."""
    try:
        files = importlib.metadata.files(_MIMALLOC_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    libraries = sorted(str(file.locate()) for file in files if file.name.startswith("libmimalloc.so"))
    return libraries[0] if libraries else None


def mimalloc_in_use() -> bool:
    """Whether this process's malloc is mimalloc's (preloaded, so its symbols are global)."""
    try:
        return hasattr(ctypes.CDLL(None), "mi_version")
    except OSError:
        return False


def restart_with_mimalloc() -> None:
    """Re-executes this program with mimalloc preloaded, if `EFFNETX_ALLOCATOR` asks for it (the default),
    the steps run on XLA:CPU on Linux, mimalloc is installed and not in use yet, no `LD_PRELOAD` is set
    (the user's own, or an earlier attempt that failed to load) and the process is not an interactive
    session; otherwise returns and changes nothing. Call it before anything else happens: the program
    starts again from the beginning."""
    if not _applies() or requested_allocator() != "mimalloc" or mimalloc_in_use() or os.environ.get("LD_PRELOAD"):
        return
    if _interactive():  # restarting a REPL or a notebook's kernel would lose its session
        return
    library = mimalloc_library()
    if library is None or not sys.executable:
        return
    environment = {**_MIMALLOC_KEEP_FREED, **os.environ, "LD_PRELOAD": library}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


def _interactive() -> bool:
    """Whether this process is an interactive session: Python's REPL (or `python -i`), IPython or Jupyter."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "IPython" in sys.modules


def retain_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory (see the module docstring) when the steps run on the CPU and
    mimalloc is not in use; True if it did. Does nothing off Linux/glibc, on an accelerator, under mimalloc,
    or with `EFFNETX_ALLOCATOR=system`. Must run before JAX starts its threads: an arena is chosen per thread
    on its first allocation."""
    global _retained
    if _retained:
        return True
    if not _applies() or mimalloc_in_use():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    _retained = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    return _retained


def set_up(restart: bool = True) -> None:
    """What a program does first: restarts with mimalloc where it applies (`restart`: False for a tool called
    from Python, which must not replace its caller's process), then keeps glibc's freed memory where mimalloc
    is not in use. Before JAX starts its threads."""
    if restart:
        restart_with_mimalloc()
    retain_freed_memory()


def allocator() -> str:
    """What allocates this process's host memory: 'mimalloc', 'glibc, freed memory retained' or 'as started'."""
    if mimalloc_in_use():
        return "mimalloc"
    return "glibc, freed memory retained" if _retained else "as started"
