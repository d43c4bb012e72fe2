"""Which float format a run computes in: bfloat16 autocast only where the hardware does bf16 natively.

    training.bf16: auto    (default) bf16 on a CUDA GPU that supports it, or a CPU with bf16
                           instructions (AVX512_BF16 or AMX); float32 elsewhere
    training.bf16: true    bf16 autocast whatever the hardware (emulated, and slow, without the instructions)
    training.bf16: false   float32 (model.dtype) throughout

Why not bf16 everywhere: on a CPU without bf16 instructions every bf16 matmul is converted in software.
Measured on an AVX2-only EPYC (2026-11-23): a SmolLM2-135M step took 3.37 s in float32 and 83.8 s under
bf16 autocast (25× slower); on a machine with the instructions bf16 was 1.2-1.65× faster than float32.
The weights stay in model.dtype either way; autocast runs the matmuls in bf16.

The precision belongs to the run, not to the process: accelerate keeps its mixed-precision setting in a
process-global `AcceleratorState` that refuses a second, different value ("cannot be changed, restart your
runtime"). `fresh_accelerator_state()` clears that setting (not the process group) before each run builds
its `Accelerator`, as transformers' `TrainingArguments` does before each Trainer, so a notebook, a sweep
or a tune trial can run float32 and bf16 runs one after another.

`RETAIN_NATIVE_BF16=1|0` answers "does this machine do bf16 natively" in place of the hardware probe: the
suite runs once as the machine is and once as the other kind of machine (README, "Tests").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.state import AcceleratorState

from retain.core.errors import ConfigError

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 /proc/cpuinfo flags of native bf16 math


@dataclass(frozen=True)
class Hardware:
    """What the chooser needs to know about the machine."""

    device: str  # "cuda" or "cpu": where accelerate puts the model
    cuda_bf16: bool  # torch.cuda.is_bf16_supported() on that GPU
    cpu_flags: frozenset[str]  # the CPU's feature flags (/proc/cpuinfo)


def choose_bf16(setting: bool | str, hardware: Hardware) -> bool:
    """Whether to train under bf16 autocast: `setting` is training.bf16 (True, False or "auto")."""
    if isinstance(setting, bool):
        return setting
    if hardware.device == "cuda":
        return hardware.cuda_bf16
    return bool(CPU_BF16_FLAGS & hardware.cpu_flags)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU listed (empty where /proc/cpuinfo does not exist: not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


NATIVE_BF16_ENV = "RETAIN_NATIVE_BF16"


def this_machine() -> Hardware:
    """The machine as probed, or as RETAIN_NATIVE_BF16 says it is (1: does bf16 natively, 0: does not)."""
    override = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if override not in ("", "0", "1"):
        raise ConfigError(f"{NATIVE_BF16_ENV}={override!r}: use 1 (this machine does bf16 natively) or 0 (it does not)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if override:
        native = override == "1"
        return Hardware(device, native, frozenset({"avx512_bf16"}) if native else frozenset())
    if device == "cuda":
        return Hardware("cuda", torch.cuda.is_bf16_supported(), frozenset())
    return Hardware("cpu", False, cpu_flags())


def fresh_accelerator_state() -> None:
    """Forget the previous run's mixed-precision setting so this run's Accelerator may choose its own.

    Only `AcceleratorState` is cleared: `PartialState` (the process group, this process's rank and device)
    stays, so runs under `accelerate launch` keep their ranks.
    """
    AcceleratorState._reset_state(reset_partial_state=False)


def describe_precision(bf16: bool, setting: bool | str, hardware: Hardware) -> str | None:
    """A line for the run's log when the choice is news: auto picked bf16, or bf16 is forced onto emulation."""
    if setting == "auto":
        where = "this GPU" if hardware.device == "cuda" else "this CPU"
        return f"training.bf16: auto -> bf16 autocast ({where} does bf16 natively)" if bf16 else None
    if bf16 and not choose_bf16("auto", hardware):
        return ("training.bf16: true, but this machine has no native bf16 (it is emulated: expect steps many "
                "times slower than float32; training.bf16: auto picks float32 here)")
    return None
