#!/usr/bin/env bash
# Tests the aarch64 kernels on this x86-64 machine: cross-builds the kernel oracle (tests/native/kernel_oracle.cc,
# every ISA table's kernels against the scalar table at the edge cases) with Debian's g++-aarch64-linux-gnu and
# runs it under qemu-user on two CPU models:
#   -cpu max          every extension qemu emulates (NEON, dotprod, i8mm);
#   -cpu cortex-a57   plain ARMv8.0-A: NEON only, so the levels that need more must fall back;
# each once with the best ISA and each ISA forced with SPARSEBERT_ISA. Also runs the oracle natively (the x86
# levels, a cross-check of the shared SIMD templates). Fails on any mismatch. Installs the cross compiler and qemu
# with apt-get when missing, and fails if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v aarch64-linux-gnu-g++ > /dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 > /dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  echo "+ apt-get install ${need[*]}"
  command -v apt-get > /dev/null || { echo "tools/test_aarch64.sh: no apt-get to install ${need[*]}" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
fi
sysroot=/usr/aarch64-linux-gnu
[ -d "$sysroot" ] || { echo "tools/test_aarch64.sh: no aarch64 sysroot at $sysroot" >&2; exit 1; }

generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
build() {  # build dir, extra CMake arguments...
  local dir=$1; shift
  cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSPARSEBERT_PYTHON=OFF \
    -DSPARSEBERT_NATIVE_TESTS=ON -DCMAKE_CXX_FLAGS=-Werror "$@" > "$dir.log" || { cat "$dir.log" >&2; exit 1; }
  cmake --build "$dir" --target kernel_oracle
}
mkdir -p build
echo "+ build the kernel oracle for aarch64"
build build/oracle-aarch64 -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++
echo "+ build the kernel oracle for this machine"
build build/oracle-native

run() {  # label, command...
  local label=$1; shift
  echo "+ $label"
  "$@"
}
oracle=build/oracle-aarch64/kernel_oracle
for cpu in max cortex-a57; do
  qemu=(qemu-aarch64 -L "$sysroot" -cpu "$cpu")
  echo "+ qemu -cpu $cpu: every ISA"
  out=$("${qemu[@]}" "$oracle") || { echo "$out"; exit 1; }
  echo "$out"
  # The two models must differ where the fallbacks matter: detection reads what qemu emulates, and the int8
  # product is the dot-product kernel only where the CPU has it.
  features=$(head -1 <<< "$out")
  case "$cpu:$features" in
    max:*" asimddp"*|cortex-a57:*" neon") ;;
    *) echo "tools/test_aarch64.sh: -cpu $cpu: unexpected $features" >&2; exit 1 ;;
  esac
  expected_int8=$([ "$cpu" = max ] && echo neon_dotprod || echo scalar)
  grep -q "^kernel_oracle: neon (int8: $expected_int8)" <<< "$out" || {
    echo "tools/test_aarch64.sh: -cpu $cpu: the neon path's int8 product is not $expected_int8" >&2; exit 1; }
  grep -q "^kernel_oracle: neon (.*own entries:.* quantize" <<< "$out" || {
    echo "tools/test_aarch64.sh: -cpu $cpu: the neon path does not set its own quantizer" >&2; exit 1; }
  for isa in neon scalar; do
    run "qemu -cpu $cpu: SPARSEBERT_ISA=$isa" env SPARSEBERT_ISA=$isa "${qemu[@]}" "$oracle"
  done
done
run "native: every ISA" build/oracle-native/kernel_oracle
echo "tools/test_aarch64.sh: the aarch64 kernels match the scalar table on both CPU models"
