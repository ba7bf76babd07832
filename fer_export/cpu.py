"""Which CPU a number was measured on, and which of its instruction sets decide int8 and bf16 results.

int8 kernels differ by instruction set: without VNNI, onnxruntime's x86 kernels for uint8 x int8
products add pairs of them into 16 bits with saturation (AVX2's ``vpmaddubsw``), so a model whose
weights use the full int8 range computes another function there (:mod:`fer_export.export.quantize`
makes weights that cannot saturate). A figure measured on one CPU holds for that CPU: every report
names it with :func:`describe`.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

#: The instruction sets that change int8 and bf16 kernels, as (name shown, /proc/cpuinfo flags: any of).
FEATURES = (
    ("AVX2", ("avx2",)),
    ("AVX-512", ("avx512f",)),
    ("VNNI", ("avx512_vnni", "avx_vnni")),
    ("AVX-512 bf16", ("avx512_bf16",)),
    ("AMX", ("amx_int8", "amx_bf16", "amx_tile")),
)


@dataclass(frozen=True)
class CpuInfo:
    model: str  # the vendor's model name, e.g. "AMD EPYC 7B13"
    family: str | None  # cpu family and model numbers, e.g. "25/1" (Linux only)
    features: tuple[str, ...]  # the names of FEATURES this CPU has

    @property
    def vnni(self) -> bool:
        """Whether uint8 x int8 products are summed without saturation (VNNI or AMX)."""
        return "VNNI" in self.features or "AMX" in self.features

    @property
    def bf16(self) -> bool:
        """Whether bfloat16 arithmetic runs natively (elsewhere torch emulates it, many times slower)."""
        return "AVX-512 bf16" in self.features or "AMX" in self.features

    def __str__(self) -> str:
        family = f", family/model {self.family}" if self.family else ""
        return f"{self.model} ({', '.join(self.features) or 'no AVX2'}{family})"


def first_processor(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's block of ``/proc/cpuinfo`` as ``{field: value}`` (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if not key:
                break  # the first processor's block is enough
            fields.setdefault(key, value.strip())
    except OSError:
        pass
    return fields


@functools.lru_cache(maxsize=1)
def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU, read from ``/proc/cpuinfo`` where there is one (Linux), else from ``platform``."""
    fields = first_processor(cpuinfo)
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    family = f"{fields['cpu family']}/{fields['model']}" if "cpu family" in fields and "model" in fields else None
    return CpuInfo(model, family, tuple(name for name, any_of in FEATURES if flags & set(any_of)))


def describe() -> str:
    """One line naming this CPU and its int8/bf16 instruction sets, for reports and warnings."""
    return str(cpu_info())
