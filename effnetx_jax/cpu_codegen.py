"""XLA:CPU code generation for the steps: 512-bit vector instructions on CPUs with AVX-512, and XLA's
own (Eigen) convolutions rather than YNNPACK's.

Vector width: XLA:CPU asks LLVM for 256-bit vectors by default (`xla_cpu_prefer_vector_width`), the
width that is safe on every x86 CPU. On a CPU with AVX-512 the elementwise and reduction loops that
XLA emits itself (BatchNorm, activations, the shifted-slice depthwise conv, their gradients) do twice
the work per instruction at 512 bits. Measured on this project's AMD EPYC (AVX-512), each compile
option against the default in one process, rounds interleaved: EfficientNet-B0's train step 1.09x, its
inference 1.10x, EfficientNet-X-B0's 0.94-1.03x (docs/models.md, implementation notes).

Convolutions: XLA:CPU hands its convolutions, dots and reductions to YNNPACK by default
(`xla_cpu_experimental_ynn_fusion_type`). Its convolutions are slow on these models' shapes: the
stem's 3x3/2 conv on 3 channels took 23 ms where XLA's own took 8.5 ms, and the train and inference
steps (docs/models.md) were 1.02-1.06x (B0 train), 1.16x (B0 inference), 1.06x (X-B0 train) and
1.27x (X-B0 inference) faster with the convolutions left to XLA, dots and reductions still to YNNPACK.
Where XLA runs them, the k x k convs' kernel gradient is XLA's too (`layers.resolve_conv_kernel_grad`).

So `compiler_options()` asks for both where the steps run on the CPU (512 bits only where the CPU has
AVX-512), and for nothing on an accelerator, whose compiler knows no XLA:CPU option. An XLA that does
not take the YNNPACK option (another version, or a build without YNNPACK) compiles with its defaults.

`EFFNETX_CPU_VECTOR_WIDTH` (128, 256 or 512) sets the width instead, e.g. 256 to time the default, and
`EFFNETX_CPU_CONVOLUTIONS=ynnpack` gives convolutions back to YNNPACK (`xla`, the default, keeps them in
XLA); the command-line tools refuse another value of either before they start.
"""

from __future__ import annotations

import functools
import os

from effnetx_jax.errors import UserError

_WIDTH_VARIABLE = "EFFNETX_CPU_VECTOR_WIDTH"
_WIDTHS = ("128", "256", "512")
_CONVOLUTIONS_VARIABLE = "EFFNETX_CPU_CONVOLUTIONS"
_CONVOLUTIONS = ("xla", "ynnpack")
# XLA's default YNNPACK fusions less the convolutions (the default also has LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION).
_YNN_FUSIONS_WITHOUT_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
}


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


def _chosen(variable: str, allowed: tuple[str, ...]) -> str | None:
    """The value of environment `variable`, one of `allowed`, or None where it is not set."""
    chosen = os.environ.get(variable)
    if chosen is not None and chosen not in allowed:
        raise UserError(f"{variable}={chosen!r}: expected one of {', '.join(allowed)}")
    return chosen


def vector_width() -> str | None:
    """The vector width the steps are compiled for on the CPU (bits, as XLA's option takes it); None
    for XLA's default."""
    chosen = _chosen(_WIDTH_VARIABLE, _WIDTHS)
    if chosen is not None:
        return chosen
    return "512" if "avx512f" in _cpu_flags() else None


def requested_convolutions() -> str:
    """The `EFFNETX_CPU_CONVOLUTIONS` setting: 'xla' (the default) or 'ynnpack'."""
    return _chosen(_CONVOLUTIONS_VARIABLE, _CONVOLUTIONS) or "xla"


def convolution_library() -> str:
    """Who runs the steps' convolutions on the CPU: 'xla' where `compiler_options` keeps them from
    YNNPACK, 'ynnpack' where it does not (chosen, or an XLA that does not take the option)."""
    if requested_convolutions() == "xla" and _accepted(tuple(_YNN_FUSIONS_WITHOUT_CONVOLUTIONS.items())):
        return "xla"
    return "ynnpack"


def check_settings() -> None:
    """Raises UserError for a bad value of either environment setting (the tools call it before any work)."""
    vector_width()
    requested_convolutions()


@functools.cache
def _accepted(options: tuple[tuple[str, str], ...]) -> bool:
    """Whether this XLA compiles with `options`: a tiny program, once per process."""
    import jax
    import jax.numpy as jnp

    try:
        jax.jit(jnp.negative).lower(jnp.zeros(1)).compile(compiler_options=dict(options))
    except Exception:  # XLA raises its own error types for an option name or value it does not know
        return False
    return True


def compiler_options() -> dict[str, str]:
    """The `compiler_options` of `jax.jit` for the steps: see the module docstring."""
    import jax  # here, so that the command-line tools can check the settings before JAX starts

    if jax.default_backend() != "cpu":
        return {}
    options = {}
    width = vector_width()
    if width is not None:
        options["xla_cpu_prefer_vector_width"] = width
    if convolution_library() == "xla":
        options.update(_YNN_FUSIONS_WITHOUT_CONVOLUTIONS)
    return options
