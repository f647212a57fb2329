#!/usr/bin/env bash
# Checks that the C++ builds for Linux aarch64 (the scalar table and the NEON level), by cross-compiling with
# Debian's g++-aarch64-linux-gnu on an x86-64 machine. Nothing is run here (tools/test_aarch64.sh runs the kernels
# under qemu).
#   1. CMake configures for aarch64 with SPARSEBERT_PYTHON=OFF (the engine as a shared library, no Python needed)
#      and builds it with -Werror, linked with --no-undefined so every symbol must resolve;
#   2. fails if any compile command carries an x86 flag (-m... other than the NEON folder's -march=armv8-a) or
#      compiles an x86 kernel folder, or if any engine source or NEON kernel was left out, or if the result is not
#      an AArch64 ELF;
#   3. the pybind11 bindings (csrc/bindings) are compiled too (-fsyntax-only: their Python headers are this
#      machine's, so they are type-checked, not built).
# With --clang the same with clang++ --target=aarch64-linux-gnu (Debian's cross libstdc++ and binutils), the
# compiler family of macOS and of many Linux builds, plus a syntax check of the macOS branch of
# kernels/cpu_features.cc (its sysctl calls; no macOS SDK here, so with a stand-in declaration).
# Installs the cross compiler (and clang) with apt-get when missing. Needs cmake, pybind11 (python -m pybind11)
# and Python 3; run from the development virtual environment.
#   tools/cross_compile_aarch64.sh [--clang]
set -euo pipefail
cd "$(dirname "$0")/.."

clang=0
if [ "${1:-}" = "--clang" ]; then clang=1; shift; fi
[ $# -eq 0 ] || { echo "usage: tools/cross_compile_aarch64.sh [--clang]" >&2; exit 2; }
need=()
command -v aarch64-linux-gnu-g++ > /dev/null || need+=(g++-aarch64-linux-gnu)
[ "$clang" = 0 ] || command -v clang++ > /dev/null || need+=(clang)
if [ ${#need[@]} -gt 0 ]; then
  echo "+ apt-get install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ "$clang" = 1 ]; then
  cxx=clang++ build=build/cross-aarch64-clang compiler=(-DCMAKE_CXX_COMPILER=clang++
    -DCMAKE_CXX_COMPILER_TARGET=aarch64-linux-gnu)
else
  cxx=aarch64-linux-gnu-g++ build=build/cross-aarch64 compiler=(-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++)
fi
python3 -m pybind11 --includes > /dev/null || {
  echo "tools/cross_compile_aarch64.sh: pybind11 is needed (pip install pybind11)" >&2; exit 1; }

rm -rf "$build" && mkdir -p build
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
echo "+ cmake: engine library for aarch64 with $cxx"
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 "${compiler[@]}" \
  -DSPARSEBERT_PYTHON=OFF -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  -DCMAKE_CXX_FLAGS=-Werror -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--no-undefined > "$build.log" \
  || { cat "$build.log" >&2; exit 1; }
cmake --build "$build"

python3 - "$build" <<'PY'
import glob, json, os, shlex, subprocess, sys
build = sys.argv[1]
commands = json.load(open(f"{build}/compile_commands.json"))
compiled = {c["file"].split("/csrc/", 1)[1]: c for c in commands}
expected = {p.split("csrc/", 1)[1] for d in ("kernels", "kernels/ref", "kernels/neon", "kernels/neon_dotprod",
                                   "common", "ops", "encoder")
            for p in glob.glob(f"csrc/{d}/*.cc")}
expected.add("kernels/simd/instantiate.cc")  # once, for the NEON level
problems = [f"not compiled: {f}" for f in sorted(expected - compiled.keys())]
problems += [f"x86 kernel folder compiled: {f}" for f in sorted(compiled.keys() - expected)]
for c in commands:
    arm_flag = {"-march=armv8-a"} if c["file"].endswith("kernels/simd/instantiate.cc") or "/kernels/neon/" in c[
        "file"] else {"-march=armv8.2-a+dotprod"} if "/kernels/neon_dotprod/" in c["file"] else set()
    flags = [a for a in shlex.split(c["command"]) if a.startswith("-m") and a not in arm_flag]
    if flags:
        problems.append(f"x86 flags {flags} on {c['file']}")
lib = glob.glob(f"{build}/libsparsebert_engine.so")
header = subprocess.run(["readelf", "-h", lib[0]], capture_output=True, text=True).stdout if lib else ""
if "AArch64" not in header:
    problems.append(f"{lib or 'no library'}: not an AArch64 ELF")
if problems:
    sys.exit("tools/cross_compile_aarch64.sh:\n  " + "\n  ".join(problems))
print(f"{len(compiled)} sources compiled for aarch64 with no x86 flag; {lib[0]} is AArch64")

# The bindings, with the flags CMake gave the engine's files (no output, no -o), plus pybind11's and Python's
# headers (this machine's: the bindings are type-checked for aarch64, not built).
engine = shlex.split(compiled["encoder/builder.cc"]["command"])
flags = [a for a, before in zip(engine, [""] + engine) if a not in ("-c", "-o") and before != "-o"
         and not a.endswith(".cc")]
includes = shlex.split(subprocess.check_output([sys.executable, "-m", "pybind11", "--includes"], text=True))
for source in sorted(glob.glob("csrc/bindings/*.cc")):
    print(f"+ {flags[0]} -fsyntax-only {source}", flush=True)
    subprocess.run(flags + includes + ["-fsyntax-only", os.path.abspath(source)], check=True,
                   cwd=compiled["encoder/builder.cc"]["directory"])
PY
if [ "$clang" = 1 ]; then
  # The macOS branch: __APPLE__ instead of __linux__, sysctlbyname declared as in the SDK's <sys/sysctl.h>.
  mkdir -p "$build/macos-stub/sys"
  printf '#include <stddef.h>\nint sysctlbyname(const char*, void*, size_t*, void*, size_t);\n' \
    > "$build/macos-stub/sys/sysctl.h"
  echo "+ clang++ -fsyntax-only kernels/cpu_features.cc as on macOS arm64"
  clang++ --target=aarch64-linux-gnu -U__linux__ -D__APPLE__ -std=c++17 -Wall -Wextra -Werror -Icsrc \
    -isystem "$build/macos-stub" -fsyntax-only csrc/kernels/cpu_features.cc
fi
echo "tools/cross_compile_aarch64.sh: the aarch64 build (scalar + NEON) compiles with $cxx"
