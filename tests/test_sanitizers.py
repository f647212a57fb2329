"""Checks that only mean something in the AddressSanitizer + UndefinedBehaviorSanitizer build of the extension
(.ci/sanitizers builds it and runs the kernel and engine tests under it); skipped in the normal build."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sparsebert import _native

pytestmark = pytest.mark.skipif(not _native.core().SANITIZED, reason="needs the sanitizer build (.ci/sanitizers)")

WORKER = Path(__file__).with_name("leak_check_worker.py")
CONTROL_BYTES = 123_457  # an unusual size, to find the deliberate leak among Python's own


def test_no_leak_under_leak_sanitizer(small_model, tmp_path):
    log = tmp_path / "lsan"
    # Full stacks (slow unwinding) so a leak made inside the extension names it even under Python frames.
    env = dict(os.environ, ASAN_OPTIONS=f"detect_leaks=1:fast_unwind_on_malloc=0:malloc_context_size=60:"
                                        f"log_path={log}")
    result = subprocess.run([sys.executable, str(WORKER), str(small_model.path), str(CONTROL_BYTES)], env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.stdout.strip().endswith("done"), result.stderr[-3000:]
    reports = "".join(p.read_text() for p in tmp_path.glob("lsan.*"))
    records = [r for r in re.split(r"\n\s*\n", reports) if re.search(r"(Direct|Indirect) leak of", r)]
    # The interpreter never frees some of its own objects at exit; those leaks name no sparsebert code.
    assert any(f"leak of {CONTROL_BYTES} byte(s)" in r for r in records), "LeakSanitizer reported nothing"
    ours = [r for r in records if "_core.cpython" in r or "sparsebert" in r]
    assert not ours, "leaks in sparsebert:\n\n" + "\n\n".join(ours[:5])
