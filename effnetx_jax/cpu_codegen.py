"""XLA:CPU code generation for the steps: 512-bit vector instructions on CPUs with AVX-512.

XLA:CPU asks LLVM for 256-bit vectors by default (`xla_cpu_prefer_vector_width`), the width that is
safe on every x86 CPU. On a CPU with AVX-512 the elementwise and reduction loops that XLA emits itself
(BatchNorm, activations, the shifted-slice depthwise conv, their gradients) do twice the work per
instruction at 512 bits. Measured on this project's AMD EPYC (AVX-512), each compile option against the
default in one process, rounds interleaved: EfficientNet-B0's train step 1.09x, its inference 1.10x,
EfficientNet-X-B0's 0.94-1.03x (docs/models.md, implementation notes). So `compiler_options()` asks for 512
bits where the CPU has AVX-512 and the steps run on the CPU, and for nothing otherwise: an accelerator's
compiler knows no XLA:CPU option, and without AVX-512 256 bits is already the widest.

`EFFNETX_CPU_VECTOR_WIDTH` (128, 256 or 512) sets the width instead, e.g. 256 to time the default; the
command-line tools refuse another value before they start.
"""

from __future__ import annotations

import functools
import os

from effnetx_jax.errors import UserError

_WIDTH_VARIABLE = "EFFNETX_CPU_VECTOR_WIDTH"
_WIDTHS = ("128", "256", "512")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (Linux's /proc/cpuinfo; none known elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def vector_width() -> str | None:
    """The vector width the steps are compiled for on the CPU (bits, as XLA's option takes it); None
    for XLA's default."""
    chosen = os.environ.get(_WIDTH_VARIABLE)
    if chosen is not None:
        if chosen not in _WIDTHS:
            raise UserError(f"{_WIDTH_VARIABLE}={chosen!r}: expected one of {', '.join(_WIDTHS)}")
        return chosen
    return "512" if "avx512f" in _cpu_flags() else None


def compiler_options() -> dict[str, str]:
    """The `compiler_options` of `jax.jit` for the steps: see the module docstring."""
    import jax  # here, so that the command-line tools can check the setting before JAX starts

    if jax.default_backend() != "cpu":
        return {}
    width = vector_width()
    return {} if width is None else {"xla_cpu_prefer_vector_width": width}
