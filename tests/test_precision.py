"""training.bf16: auto picks bf16 only where the hardware does it natively; true and false are obeyed."""

import pytest

from retain.config import config_from_dict
from retain.strict import ConfigError
from retain.training.precision import Hardware, choose_bf16, cpu_flags, describe_precision

AVX2_ONLY = Hardware("cpu", False, frozenset({"sse4_2", "avx2", "fma"}))
AVX512_BF16 = Hardware("cpu", False, frozenset({"avx2", "avx512f", "avx512_bf16"}))
AMX = Hardware("cpu", False, frozenset({"avx2", "amx_tile", "amx_bf16"}))
AMPERE = Hardware("cuda", True, frozenset())
VOLTA = Hardware("cuda", False, frozenset())


@pytest.mark.parametrize("hardware, expected", [(AVX2_ONLY, False), (AVX512_BF16, True), (AMX, True),
                                                (AMPERE, True), (VOLTA, False)])
def test_auto_follows_the_hardware(hardware, expected):
    assert choose_bf16("auto", hardware) is expected


@pytest.mark.parametrize("hardware", [AVX2_ONLY, AMX, AMPERE, VOLTA])
def test_true_and_false_are_obeyed_whatever_the_hardware(hardware):
    assert choose_bf16(True, hardware) is True
    assert choose_bf16(False, hardware) is False


def test_forcing_bf16_onto_emulation_is_said_and_auto_says_what_it_picked():
    assert "emulated" in describe_precision(True, True, AVX2_ONLY)
    assert describe_precision(True, True, AMX) is None
    assert "bf16 autocast" in describe_precision(True, "auto", AMPERE)
    assert describe_precision(False, "auto", AVX2_ONLY) is None  # float32 as everywhere: nothing to say


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # not Linux: no flags, so auto means float32


def test_the_config_key_takes_auto_true_false_and_nothing_else(make_config):
    assert config_from_dict(make_config()).training.bf16 == "auto"  # the default
    for value in ("auto", True, False):
        assert config_from_dict(make_config(training={"bf16": value})).training.bf16 == value
    with pytest.raises(ConfigError, match="bf16"):
        config_from_dict(make_config(training={"bf16": "yes"}))
