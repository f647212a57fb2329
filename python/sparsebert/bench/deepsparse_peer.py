"""The optional DeepSparse peer, run as a subprocess of another interpreter.

DeepSparse cannot be imported here (it pins numpy < 2 and Python <= 3.11), so ``_deepsparse_driver.py`` runs
in its own environment on the same ONNX file and the same input arrays.  It is therefore *not* interleaved
with the other engines: its figures come from a different time window, which the harness states, and the
ratio to it uses sparsebert timed on its own immediately afterwards.
A failure of this optional peer is reported in the result, not raised: the other engines' figures stand.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

DRIVER = Path(__file__).with_name("_deepsparse_driver.py")
TIMEOUT_S = 1800  # compiling BERT-large takes minutes; a hung subprocess must still end the benchmark


def run_deepsparse(python: str, onnx_path: str, inputs: dict[str, np.ndarray], threads: int, runs: int,
                   warmup: int, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """Time DeepSparse; returns ``times_ms``, ``version``, ``hidden`` (its last_hidden_state) or ``error``."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return {"error": f"--deepsparse-python {python} is not an executable file"}
    with tempfile.TemporaryDirectory(prefix="sparsebert-ds-") as tmp:
        inputs_path, outputs_path = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "outputs.npz")
        np.savez(inputs_path, **inputs)
        # -I: isolated mode, so neither this package's directory nor PYTHON* variables (our numpy 2 on a
        # PYTHONPATH) leak into DeepSparse's environment.
        cmd = [python, "-I", str(DRIVER), onnx_path, inputs_path, "--threads", str(threads), "--runs", str(runs),
               "--warmup", str(warmup), "--outputs", outputs_path]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {"error": f"DeepSparse did not finish within {timeout:.0f} s"}
        except OSError as exc:
            return {"error": f"cannot run {python}: {exc}"}
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            return {"error": f"DeepSparse driver failed (exit {proc.returncode}): {tail}"}
        result = json.loads(lines[-1])
        if os.path.isfile(outputs_path):
            with np.load(outputs_path) as out:
                result["hidden"] = np.array(out["last_hidden_state"])
        return result


__all__ = ["DRIVER", "run_deepsparse"]
