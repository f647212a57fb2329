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


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``sparsebert bench ...`` when run through the console script."""
    argv = list(sys.argv if argv is None else argv)
    if argv and os.path.basename(argv[0]) in ("sparsebert", "__main__.py", "cli.py"):
        argv[0] = "sparsebert"
    return shlex.join(argv)


def cpu_brand() -> str:
    """The CPU's marketing name: from CPUID via the extension, else /proc/cpuinfo, else platform."""
    try:
        brand = _native.core().cpu_info().get("brand", "").strip()
        if brand:
            return brand
    except Exception:  # the extension may be missing where only the tables are rendered
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
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
    extension = None
    try:
        core = _native.core()
        flags = list(core.cpu_info().get("flags", []))
        # The commit names the sources; the build's file and time say whether the extension was rebuilt from them.
        built = datetime.datetime.fromtimestamp(os.path.getmtime(core.__file__), datetime.timezone.utc)
        extension = {"file": core.__file__, "built": built.isoformat(timespec="seconds")}
    except Exception:
        pass
    return {
        "cpu": cpu_brand(),
        "cpu_flags": flags,
        "cpus_available": _cpus_available(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "isa": isa,
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


__all__ = ["command_line", "cpu_brand", "environment", "git_commit", "machine_line", "package_versions"]
