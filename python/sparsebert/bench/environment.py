"""What every benchmark result records about where and how it was produced.

A latency without the CPU, the ISA path, the thread count, the commit and the command cannot be reproduced
or compared, so each result carries them; the load average is there because a busy shared machine is the
usual reason two runs disagree.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from typing import Any

from .. import _native

PACKAGES = ("sparsebert", "numpy", "torch", "transformers", "onnx", "onnxruntime", "matplotlib")
CPUINFO = "/proc/cpuinfo"


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``sparsebert bench ...`` when run through the console script."""
    argv = list(sys.argv if argv is None else argv)
    if argv and os.path.basename(argv[0]) in ("sparsebert", "__main__.py", "cli.py"):
        argv[0] = "sparsebert"
    return shlex.join(argv)


# Arm CPUs name themselves only by the MIDR_EL1 fields Linux shows in /proc/cpuinfo ("CPU implementer",
# "CPU part"): aarch64 kernels print no "model name" and the extension has no brand string there.
ARM_IMPLEMENTERS = {0x41: "ARM", 0x46: "Fujitsu", 0x48: "HiSilicon", 0x4E: "NVIDIA", 0x51: "Qualcomm",
                    0x61: "Apple", 0x6D: "Microsoft", 0xC0: "Ampere"}
ARM_PARTS = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4D): "Cortex-A715",
    (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD4F): "Neoverse-V2", (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4", (0x41, 0xD84): "Neoverse-V3",
    (0x41, 0xD8E): "Neoverse-N3", (0x46, 0x001): "A64FX", (0x48, 0xD01): "TaiShan-v110",
    (0x4E, 0x004): "Carmel", (0x6D, 0xD49): "Azure-Cobalt-100", (0xC0, 0xAC3): "Ampere-1",
    (0xC0, 0xAC4): "Ampere-1a",
}


def _field_value(line: str) -> str:
    return line.split(":", 1)[1].strip()


def arm_cpu_name(cpuinfo: str) -> str | None:
    """The cores /proc/cpuinfo text describes by implementer and part, e.g. "ARM Neoverse-V1", or for a
    big.LITTLE chip each kind in order of appearance ("ARM Cortex-A55 + Cortex-A76"); None without those fields."""
    kinds: list[tuple[str, str]] = []
    implementer = None
    for line in cpuinfo.splitlines():
        try:
            if line.startswith("CPU implementer"):
                implementer = int(_field_value(line), 16)
            elif line.startswith("CPU part") and implementer is not None:
                part = int(_field_value(line), 16)
                kind = (ARM_IMPLEMENTERS.get(implementer, f"implementer 0x{implementer:02x}"),
                        ARM_PARTS.get((implementer, part), f"part 0x{part:03x}"))
                if kind not in kinds:
                    kinds.append(kind)
        except (IndexError, ValueError):  # a malformed line names nothing
            continue
    if not kinds:
        return None
    if len({vendor for vendor, _ in kinds}) == 1:
        return f"{kinds[0][0]} " + " + ".join(core for _, core in kinds)
    return " + ".join(f"{vendor} {core}" for vendor, core in kinds)


def cpu_brand(cpuinfo_path: str | None = None) -> str:
    """The CPU's marketing name: from CPUID (x86) or sysctl (macOS) via the extension, else /proc/cpuinfo's model
    name, or on Arm Linux its implementer and part, else platform."""
    try:
        brand = _native.core().cpu_info().get("brand", "").strip()
        if brand:
            return brand
    except Exception:  # the extension may be missing where only the tables are rendered
        pass
    try:
        with open(cpuinfo_path or CPUINFO, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        text = ""
    arm = arm_cpu_name(text)
    if arm is not None:  # before "model name": 32-bit Arm kernels print a generic one ("ARMv7 Processor rev 4")
        return arm
    for line in text.splitlines():
        if line.startswith("model name"):
            return _field_value(line)
    return platform.processor() or platform.machine()


def git_commit(path: str | None = None) -> str | None:
    """Short commit of the checkout holding ``path`` (this package by default), ``+dirty`` if modified;
    None when not in a git checkout (an installed wheel)."""
    where = os.path.dirname(os.path.abspath(path or __file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpus_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _thread_pools() -> list[dict[str, Any]]:
    # Which BLAS / OpenMP runtimes are loaded and with how many threads (a slow peer is often a wrong pool).
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "num_threads", "architecture", "threading_layer")
    return [{k: pool.get(k) for k in keep if pool.get(k) is not None} for pool in threadpool_info()]


def environment(isa: str | None = None, threads: int | list[int] | None = None,
                command: str | None = None) -> dict[str, Any]:
    """The record a result carries: machine, ISA path, threads, commit, versions, date, command, load."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    flags: list[str] = []
    extension = int8_isa = None
    try:
        core = _native.core()
        flags = list(core.cpu_info().get("flags", []))
        # The commit names the sources; the build's file and time say whether the extension was rebuilt from them.
        built = datetime.datetime.fromtimestamp(os.path.getmtime(core.__file__), datetime.timezone.utc)
        extension = {"file": core.__file__, "built": built.isoformat(timespec="seconds")}
        # The int8 product is a level of its own within a path: avx512_vnni, neon_dotprod or the scalar loop.
        int8_isa = core.int8_isa(isa)
    except Exception:
        pass
    return {
        "cpu": cpu_brand(),
        "cpu_flags": flags,
        "cpus_available": _cpus_available(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "isa": isa,
        "int8_isa": int8_isa,
        "threads": threads,
        "commit": git_commit(),
        "extension": extension,
        "versions": package_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else command_line(),
        "load_average": load,
        "thread_pools": _thread_pools(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "SPARSEBERT_ISA", "MKL_NUM_THREADS")
                if k in os.environ},
    }


def machine_line(env: dict[str, Any]) -> str:
    """One line naming the machine and run, for table captions and plot titles."""
    parts = [env["cpu"], f"{env['cpus_available']} CPUs available"]
    if env.get("isa"):
        parts.append(f"isa {env['isa']}")
    threads = env.get("threads")
    if isinstance(threads, list):  # the kernel benchmark runs several thread counts
        parts.append(f"threads {', '.join(map(str, threads))}")
    elif threads:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    parts.append(f"commit {env['commit'] or 'n/a'}")
    parts.append(env["date"][:10])
    return ", ".join(parts)


__all__ = ["ARM_IMPLEMENTERS", "ARM_PARTS", "arm_cpu_name", "command_line", "cpu_brand", "environment", "git_commit",
           "machine_line", "package_versions"]
