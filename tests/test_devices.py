"""Tests of `devices.py`: what a process computes on."""

import logging

import pytest

from low_rank_local_connectivity import devices

# Abridged /proc/cpuinfo of the two CPU kinds the project's machines have had.
_SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
flags\t\t: fpu
"""
_AVX2_ONLY = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 fma avx avx2
"""


@pytest.mark.parametrize("text, expected", [
    (_SAPPHIRE_RAPIDS, ["amx_bf16", "amx_tile", "avx512_bf16"]),
    (_AVX2_ONLY, []),
    ("processor\t: 0\nmodel name\t: some ARM CPU\n", None),
])
def test_cpu_bfloat16_instructions_reads_the_first_flags_line(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert devices.cpu_bfloat16_instructions(str(cpuinfo)) == expected


def test_cpu_bfloat16_instructions_is_none_without_cpuinfo(tmp_path):
    assert devices.cpu_bfloat16_instructions(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("precision, instructions, warns", [
    ("mixed_bfloat16", [], True),
    ("mixed_bfloat16", ["avx512_bf16"], False),
    ("mixed_bfloat16", None, False),  # Unknown CPU: no guess.
    ("float32", [], False),
    ("mixed_float16", [], False),
])
def test_warns_only_for_bfloat16_on_a_cpu_without_its_instructions(
        monkeypatch, caplog, precision, instructions, warns):
    monkeypatch.setattr(devices, "cpu_bfloat16_instructions", lambda: instructions)
    with caplog.at_level(logging.WARNING):
        assert devices.warn_if_bfloat16_is_emulated(precision) is warns
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(messages) is warns
    if warns:
        (message,) = messages
        assert "mixed_bfloat16" in message and "avx512_bf16" in message
        assert "float32" in message


def test_no_bfloat16_warning_on_an_accelerator(monkeypatch, caplog):
    monkeypatch.setattr(devices, "cpu_bfloat16_instructions", lambda: [])
    monkeypatch.setattr(devices, "device_kind", lambda: "NVIDIA H200")
    assert devices.warn_if_bfloat16_is_emulated("mixed_bfloat16") is False

