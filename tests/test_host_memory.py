"""effnetx_jax.host_memory: mimalloc preloaded by a program, or glibc keeping freed memory, where XLA:CPU runs
the steps."""

import os
import subprocess
import sys

import pytest

from effnetx_jax import host_memory

from command_line import error_line

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and glibc's mallopt")

# Sets the allocator up as a command line does, then allocates, fills and frees `sys.argv[1]` MiB with malloc
# from a thread (as XLA:CPU's workers do), twice; prints the process id first (a restart prints it again),
# then the allocator, the program's arguments and the page faults of the second time.
_SECOND_ALLOCATION_FAULTS = """
import ctypes, os, resource, sys, threading
print(os.getpid(), flush=True)
from effnetx_jax import host_memory
host_memory.set_up()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = int(sys.argv[1]) << 20
faults = []
def allocate_fill_free():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
for _ in range(2):
    worker = threading.Thread(target=allocate_fill_free)
    worker.start()
    worker.join()
print(host_memory.allocator())
print(sys.argv[1:])
print(faults[1])
"""


def _few_faults(mebibytes: int) -> int:
    """Page faults that show a freed block of `mebibytes` was reused: under a sixteenth of its 4 KiB pages."""
    return (mebibytes << 8) // 16


def _clean_environment() -> dict:
    """This process's environment less what chooses the platform or the allocator."""
    chosen = ("JAX_PLATFORMS", "LD_PRELOAD", "EFFNETX_ALLOCATOR", "MIMALLOC_PURGE_DELAY")
    return {key: value for key, value in os.environ.items() if key not in chosen}


def _run(environment: dict, mebibytes: int = 64) -> tuple[list[str], str, int]:
    """(the process ids it printed, the allocator, the page faults of the second allocation)."""
    command = [sys.executable, "-c", _SECOND_ALLOCATION_FAULTS, str(mebibytes), "--flag=kept"]
    result = subprocess.run(command, env=_clean_environment() | environment, capture_output=True, text=True, check=True)
    *pids, allocator, arguments, faults = result.stdout.splitlines()
    assert arguments == f"['{mebibytes}', '--flag=kept']"  # the restart keeps the program's arguments
    return pids, allocator, int(faults)


@linux_only
def test_a_program_restarts_itself_with_mimalloc_and_keeps_freed_memory():
    assert host_memory.mimalloc_library() is not None  # a dependency on Linux
    pids, allocator, faults = _run({"JAX_PLATFORMS": "cpu"})
    assert allocator == "mimalloc"
    assert len(pids) == 2 and pids[0] == pids[1]  # started again in the same process: exec, not a child
    # mimalloc keeps the freed block (MIMALLOC_PURGE_DELAY=-1) and reuses it.
    assert faults < _few_faults(64)


@linux_only
def test_glibc_keeps_freed_memory_when_chosen_and_the_system_allocator_does_not():
    pids, allocator, faults = _run({"JAX_PLATFORMS": "cpu", "EFFNETX_ALLOCATOR": "glibc"})
    assert (len(pids), allocator) == (1, "glibc, freed memory retained") and faults < _few_faults(64)
    pids, allocator, faults = _run({"JAX_PLATFORMS": "cpu", "EFFNETX_ALLOCATOR": "system"})
    # Without the settings glibc maps fresh pages for the block and faults on each of its 16,384 pages.
    assert (len(pids), allocator) == (1, "as started") and faults > 15_000


@pytest.mark.slow
@linux_only
def test_a_freed_block_above_2_gib_is_kept_too():
    # The largest trim threshold mallopt takes as a positive int (2 GiB - 1) would return this block's
    # pages to the kernel on free, as it did with the train step's activations on some machines.
    for allocator in ("mimalloc", "glibc"):
        _, used, faults = _run({"JAX_PLATFORMS": "cpu", "EFFNETX_ALLOCATOR": allocator}, mebibytes=2304)
        assert used.startswith(allocator) and faults < _few_faults(2304)


@linux_only
def test_left_alone_on_an_accelerator_and_under_the_users_own_preload():
    pids, allocator, _ = _run({"JAX_PLATFORMS": "cuda,cpu"})
    assert (len(pids), allocator) == (1, "as started")
    # A library the user preloads (any: here libm) is kept; glibc keeps freed memory as the fallback.
    pids, allocator, _ = _run({"JAX_PLATFORMS": "cpu", "LD_PRELOAD": "libm.so.6"})
    assert (len(pids), allocator) == (1, "glibc, freed memory retained")


@linux_only
def test_an_interactive_session_is_not_restarted():
    # `python -i` with its input closed runs the script and exits; a restart would print the pid twice.
    script = "import os; print(os.getpid()); from effnetx_jax import host_memory; host_memory.restart_with_mimalloc()"
    environment = _clean_environment() | {"JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-i", "-c", script]
    result = subprocess.run(command, env=environment, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert result.returncode == 0 and len(result.stdout.split()) == 1, result


@linux_only
def test_a_command_line_tool_runs_under_mimalloc():
    tool = "from effnetx_jax import cli, host_memory; cli.run(lambda argv: print(host_memory.allocator()))"
    environment = _clean_environment() | {"JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", tool], env=environment, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "mimalloc"


def test_a_bad_setting_is_refused_before_a_tool_starts(monkeypatch):
    monkeypatch.setenv("EFFNETX_ALLOCATOR", "tcmalloc")
    assert error_line("bench", "--model=efficientnet-b0") == (
        "error: EFFNETX_ALLOCATOR='tcmalloc': expected one of mimalloc, glibc, system"
    )
