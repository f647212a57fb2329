"""What a benchmark result says about its machine, on the CPUs the harness must run on unchanged: x86 (CPUID's
brand through the extension) and Arm, where Linux names the CPU only by implementer and part in /proc/cpuinfo."""

from __future__ import annotations

import platform
import types

import pytest

from sparsebert.bench import environment as env_mod
from sparsebert.bench import report

# /proc/cpuinfo of a c7g instance (AWS Graviton3): per core, the MIDR fields and no "model name".
GRAVITON3 = "".join(f"""processor\t: {i}
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop \
sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1

""" for i in range(2))

# A plain ARMv8.0 core without the dot product (AWS Graviton1 class, or qemu -cpu cortex-a57).
CORTEX_A57 = """processor\t: 0
BogoMIPS\t: 125.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd07
CPU revision\t: 3
"""

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu avx2 avx512f
"""


def _core_part(implementer: str, part: str) -> str:
    return f"CPU implementer\t: {implementer}\nCPU architecture: 8\nCPU part\t: {part}\n\n"


@pytest.mark.parametrize("text, name", [
    (GRAVITON3, "ARM Neoverse-V1"),
    (CORTEX_A57, "ARM Cortex-A57"),
    # big.LITTLE (a Rockchip RK3588): each kind once, in the order the kernel lists them
    (_core_part("0x41", "0xd05") * 4 + _core_part("0x41", "0xd0b") * 4, "ARM Cortex-A55 + Cortex-A76"),
    (_core_part("0xc0", "0xac3"), "Ampere Ampere-1"),
    # parts are per implementer: HiSilicon's 0xd40 is not Arm's Neoverse-V1
    (_core_part("0x48", "0xd40"), "HiSilicon part 0xd40"),
    (_core_part("0x41", "0xfff"), "ARM part 0xfff"),
    (_core_part("0x99", "0x001"), "implementer 0x99 part 0x001"),
])
def test_arm_cpu_name_from_implementer_and_part(text, name):
    assert env_mod.arm_cpu_name(text) == name


@pytest.mark.parametrize("text", [X86, "", "CPU implementer\t: banana\nCPU part\t: 0xd40\n"])
def test_arm_cpu_name_is_none_without_arm_fields(text):
    assert env_mod.arm_cpu_name(text) is None


def _fake_core(tmp_path, brand: str, flags: list[str], int8_isa: str):
    extension = tmp_path / "_core.so"
    extension.write_bytes(b"")
    return types.SimpleNamespace(__file__=str(extension), cpu_info=lambda: {"brand": brand, "flags": flags},
                                 int8_isa=lambda isa=None: int8_isa)


def _machine(monkeypatch, tmp_path, cpuinfo: str | None, brand: str, flags: list[str], int8_isa: str):
    core = _fake_core(tmp_path, brand, flags, int8_isa)
    monkeypatch.setattr(env_mod._native, "core", lambda: core)
    path = tmp_path / ("cpuinfo" if cpuinfo is not None else "no-such-file")
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    monkeypatch.setattr(env_mod, "CPUINFO", str(path))


@pytest.mark.parametrize("cpuinfo, flags, int8_isa, cpu", [
    (GRAVITON3, ["neon", "asimddp", "i8mm"], "neon_dotprod", "ARM Neoverse-V1"),
    (CORTEX_A57, ["neon"], "scalar", "ARM Cortex-A57"),
])
def test_environment_of_an_arm_linux_machine(monkeypatch, tmp_path, cpuinfo, flags, int8_isa, cpu):
    # aarch64 Linux: the extension reads HWCAP and has no brand string.
    _machine(monkeypatch, tmp_path, cpuinfo, "", flags, int8_isa)
    env = env_mod.environment(isa="neon", threads=4, command="sparsebert bench --kernels")
    assert env["cpu"] == cpu
    assert env["cpu_flags"] == flags and env["isa"] == "neon" and env["int8_isa"] == int8_isa
    line = env_mod.machine_line(env)
    assert line.startswith(f"{cpu}, ") and "isa neon" in line and "4 threads" in line
    assert report.provenance(env)[0] == f"Machine: {line}"


def test_environment_of_x86_keeps_the_cpuid_brand(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, X86, "Intel(R) Xeon(R) Processor", ["avx2", "avx512f"], "avx512_vnni")
    env = env_mod.environment(isa="avx512", threads=2, command="test")
    assert env["cpu"] == "Intel(R) Xeon(R) Processor" and env["int8_isa"] == "avx512_vnni"
    assert env_mod.machine_line(env).startswith("Intel(R) Xeon(R) Processor, ")


def test_cpu_brand_falls_back_to_model_name_then_platform(monkeypatch, tmp_path):
    _machine(monkeypatch, tmp_path, X86, "", [], "scalar")
    assert env_mod.cpu_brand() == "Intel(R) Xeon(R) Platinum 8488C"
    _machine(monkeypatch, tmp_path, None, "", [], "scalar")  # no /proc/cpuinfo (macOS without the extension)
    assert env_mod.cpu_brand() == (platform.processor() or platform.machine())
