#!/usr/bin/env bash
# Tests the aarch64 kernels on this x86-64 machine: cross-builds the kernel oracle (tests/native/kernel_oracle.cc,
# every ISA table's kernels against the scalar table at the edge cases) with Debian's g++-aarch64-linux-gnu and
# runs it under qemu-user on two CPU models:
#   -cpu max          every extension qemu emulates (NEON, dotprod, i8mm): paths neon_dotprod, neon, scalar;
#   -cpu cortex-a57   plain ARMv8.0-A, NEON only: paths neon, scalar (SPARSEBERT_ISA=neon_dotprod refused);
# each once with every path and each path forced with SPARSEBERT_ISA, checking the paths tested, their int8
# products and that the NEON paths set their own quantizer. Also runs the oracle natively (the x86 levels, a
# cross-check of the shared SIMD templates). Fails on any mismatch. Installs the cross compiler and qemu with
# apt-get when missing, and fails if it cannot.
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

# Runs the oracle (the command given) and checks the paths it tested, best first, each as isa:int8 product.
oracle_run() {  # label, expected paths, command...
  local label=$1 expected=$2; shift 2
  echo "+ $label"
  out=$("$@") || { echo "$out"; exit 1; }
  echo "$out"
  local paths
  paths=$(sed -n 's/^kernel_oracle: \([a-z0-9_]*\) (int8: \([a-z0-9_]*\)).*/\1:\2/p' <<< "$out" | xargs)
  [ "$paths" = "$expected" ] || {
    echo "tools/test_aarch64.sh: $label: tested $paths, expected $expected" >&2; exit 1; }
}
oracle=build/oracle-aarch64/kernel_oracle
for cpu in max cortex-a57; do
  qemu=(qemu-aarch64 -L "$sysroot" -cpu "$cpu")
  # The two models must differ where the fallbacks matter: detection reads what qemu emulates; neon_dotprod is a
  # path only where the CPU has the dot product; neon, the plain NEON path (scalar int8 product), is one on both.
  if [ "$cpu" = max ]; then
    paths="neon_dotprod:neon_dotprod neon:scalar scalar:scalar"
  else
    paths="neon:scalar scalar:scalar"
  fi
  oracle_run "qemu -cpu $cpu: every ISA" "$paths" "${qemu[@]}" "$oracle"
  features=$(head -1 <<< "$out")
  case "$cpu:$features" in
    max:*" asimddp"*|cortex-a57:*" neon") ;;
    *) echo "tools/test_aarch64.sh: -cpu $cpu: unexpected $features" >&2; exit 1 ;;
  esac
  for path in $paths; do
    isa=${path%%:*}
    [ "$isa" = scalar ] || grep -q "^kernel_oracle: $isa (.*own entries:.* quantize" <<< "$out" || {
      echo "tools/test_aarch64.sh: -cpu $cpu: the $isa path does not set its own quantizer" >&2; exit 1; }
  done
  for path in $paths; do
    oracle_run "qemu -cpu $cpu: SPARSEBERT_ISA=${path%%:*}" "$path" \
      env SPARSEBERT_ISA="${path%%:*}" "${qemu[@]}" "$oracle"
  done
done
# A path the CPU lacks is refused by name, not replaced by another.
echo "+ qemu -cpu cortex-a57: SPARSEBERT_ISA=neon_dotprod must be refused"
if refused=$(SPARSEBERT_ISA=neon_dotprod qemu-aarch64 -L "$sysroot" -cpu cortex-a57 "$oracle" 2>&1); then
  echo "tools/test_aarch64.sh: SPARSEBERT_ISA=neon_dotprod ran on cortex-a57" >&2; exit 1
fi
grep -q "cannot run ISA 'neon_dotprod'" <<< "$refused" || {
  echo "tools/test_aarch64.sh: SPARSEBERT_ISA=neon_dotprod on cortex-a57: $refused" >&2; exit 1; }
echo "$refused"
echo "+ native: every ISA"
build/oracle-native/kernel_oracle
echo "tools/test_aarch64.sh: the aarch64 kernels match the scalar table on both CPU models"
