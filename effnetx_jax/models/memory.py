"""XLA's memory estimate of a compiled program on each device, and the device memory it must fit in.

The estimate is what XLA's buffer assignment reserves for one device's part of the program
(`compiled.memory_analysis()`): its arguments, its outputs (less those that reuse a donated argument's
buffer), its temporaries and its code. It is known before anything runs, so the trainer stops a run
that cannot fit before its first step, and `effnetx-bench` and `benchmarks/memory_table.py` report it.
"""

from __future__ import annotations

import dataclasses

from effnetx_jax.errors import UserError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    argument_bytes: int
    output_bytes: int
    alias_bytes: int  # outputs written into donated arguments' buffers: counted once, as arguments
    temp_bytes: int
    code_bytes: int

    @classmethod
    def of(cls, compiled) -> MemoryEstimate:
        """The estimate of a `jax.jit(...).lower(...).compile()` result, per device."""
        stats = compiled.memory_analysis()
        return cls(
            argument_bytes=stats.argument_size_in_bytes,
            output_bytes=stats.output_size_in_bytes,
            alias_bytes=stats.alias_size_in_bytes,
            temp_bytes=stats.temp_size_in_bytes,
            code_bytes=stats.generated_code_size_in_bytes,
        )

    @property
    def total_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    def describe(self) -> str:
        return (
            f"{_gib(self.total_bytes)} (arguments {_gib(self.argument_bytes)}, outputs "
            f"{_gib(self.output_bytes - self.alias_bytes)} beyond the donated arguments, temporaries "
            f"{_gib(self.temp_bytes)})"
        )


def device_bytes(device) -> int | None:
    """The memory the backend lets `device` allocate, or None where it does not say (the CPU)."""
    stats = device.memory_stats()
    return stats.get("bytes_limit") if stats else None


def _gib(count: int) -> str:
    return f"{count / GIB:.3f} GiB"


def report(estimate: MemoryEstimate, devices, what: str) -> list[str]:
    """One line per device: the estimate of `what` next to the device's memory (where known)."""
    lines = []
    for device in devices:
        limit = device_bytes(device)
        available = f"of {_gib(limit)}" if limit is not None else "(the backend reports no memory size)"
        lines.append(f"{what} on {device}: {estimate.describe()} {available}")
    return lines


def check_fits(estimate: MemoryEstimate, devices, what: str, levers: str) -> None:
    """Raises a one-line `UserError` naming `levers` if the estimate exceeds a device's memory."""
    for device in devices:
        limit = device_bytes(device)
        if limit is not None and estimate.total_bytes > limit:
            raise UserError(
                f"{what} needs an estimated {_gib(estimate.total_bytes)} per device but {device} has "
                f"{_gib(limit)}; {levers}"
            )
