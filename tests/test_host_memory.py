"""effnetx_jax.host_memory: freed host memory kept for reuse where XLA:CPU runs the steps."""

import os
import subprocess
import sys

import pytest

# Allocates, fills and frees `sys.argv[1]` MiB with malloc from a thread (as XLA:CPU's workers do), then
# does it again and prints whether the setting applied and the page faults of the second time.
_SECOND_ALLOCATION_FAULTS = """
import ctypes, resource, sys, threading
from effnetx_jax import host_memory
print(host_memory.retain_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
size = int(sys.argv[1]) << 20
faults = []
def allocate_fill_free():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(ctypes.c_void_p(block))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
for _ in range(2):
    worker = threading.Thread(target=allocate_fill_free)
    worker.start()
    worker.join()
print(faults[1])
"""


def _run(environment: dict, mebibytes: int = 64) -> tuple[str, int]:
    env = {key: value for key, value in os.environ.items() if key not in ("JAX_PLATFORMS",)} | environment
    command = [sys.executable, "-c", _SECOND_ALLOCATION_FAULTS, str(mebibytes)]
    lines = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.split()
    return lines[0], int(lines[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults_on_the_cpu():
    applied, faults = _run({"JAX_PLATFORMS": "cpu"})
    default, default_faults = _run({"JAX_PLATFORMS": "cpu", "EFFNETX_RETAIN_FREED_MEMORY": "0"})
    assert (applied, default) == ("True", "False")
    # 64 MiB is 16,384 pages: without the setting glibc maps fresh pages and faults on each of them.
    assert default_faults > 15_000 and faults < 1_000


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_above_2_gib_is_kept_too():
    # The largest trim threshold mallopt takes as a positive int (2 GiB - 1) would return this block's
    # pages to the kernel on free, as it did with the train step's activations on some machines.
    applied, faults = _run({"JAX_PLATFORMS": "cpu"}, mebibytes=2304)
    assert applied == "True" and faults < 1_000


def test_left_alone_when_the_steps_run_on_an_accelerator():
    assert _run({"JAX_PLATFORMS": "cuda,cpu"})[0] == "False"
