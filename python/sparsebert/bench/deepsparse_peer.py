"""The optional DeepSparse peer: a child process of DeepSparse's own interpreter, driven over a pipe.

DeepSparse cannot be imported here (it pins numpy < 2 and Python <= 3.11), so ``_deepsparse_driver.py`` runs
in its own environment on the same ONNX file and the same input arrays and performs one inference per
request.  Because the harness decides when each request happens, DeepSparse takes its turn in the same
interleaved round-robin as the in-process engines; its times are measured inside the child, so the pipe's
round trip is not counted.  If it fails to start, the benchmark goes on without it and says why.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .runners import Runner

DRIVER = Path(__file__).with_name("_deepsparse_driver.py")
START_TIMEOUT_S = 1800  # compiling BERT-large takes minutes; a hung child must still end the benchmark
RUN_TIMEOUT_S = 600


class DeepSparseError(RuntimeError):
    """DeepSparse could not be started or stopped answering."""


class DeepSparseProcess:
    """The running driver.  ``run()`` performs one inference and returns its milliseconds; ``close()`` ends it."""

    def __init__(self, python: str, onnx_path: str, inputs: dict[str, np.ndarray], threads: int,
                 timeout: float = START_TIMEOUT_S):
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            raise DeepSparseError(f"--deepsparse-python {python} is not an executable file")
        self._tmp = tempfile.TemporaryDirectory(prefix="sparsebert-ds-")
        inputs_path = os.path.join(self._tmp.name, "inputs.npz")
        outputs_path = os.path.join(self._tmp.name, "outputs.npz")
        np.savez(inputs_path, **inputs)
        # stderr to a file: DeepSparse logs there, and an unread pipe would fill up and block the child.
        self._stderr = open(os.path.join(self._tmp.name, "stderr.txt"), "w+", encoding="utf-8")
        # -I: isolated mode, so neither this package's directory nor PYTHON* variables (our numpy 2 on a
        # PYTHONPATH) leak into DeepSparse's environment.
        cmd = [python, "-I", str(DRIVER), onnx_path, inputs_path, outputs_path, "--threads", str(threads)]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                          text=True, bufsize=1)
        except OSError as exc:
            self._cleanup()
            raise DeepSparseError(f"cannot run {python}: {exc}") from None
        try:
            self.info = self._read(timeout)
            if not self.info.get("ready"):
                raise DeepSparseError(f"unexpected first answer {self.info}")
            with np.load(outputs_path) as out:
                self.hidden = np.array(out["last_hidden_state"])
        except BaseException:
            self.close()
            raise

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().strip().splitlines() if line.strip()]
        return " | ".join(lines[-3:]) or "no message"

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeepSparseError(f"DeepSparse did not answer within {timeout:.0f} s")
            ready, _, _ = select.select([self._proc.stdout], [], [], remaining)
            if not ready:
                continue
            line = self._proc.stdout.readline()
            if not line:  # the child exited
                code = self._proc.wait()
                raise DeepSparseError(f"DeepSparse driver exited (code {code}): {self._stderr_tail()}")
            if line.startswith("{"):
                answer = json.loads(line)
                if "error" in answer:
                    raise DeepSparseError(f"DeepSparse driver: {answer['error']}")
                return answer

    def run(self) -> float:
        self._proc.stdin.write("run\n")
        self._proc.stdin.flush()
        return float(self._read(RUN_TIMEOUT_S)["ms"])

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.stdin.write("quit\n")
                    proc.stdin.flush()
                    proc.wait(timeout=30)
                except (OSError, subprocess.TimeoutExpired, ValueError):
                    proc.kill()
                    proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:  # a broken pipe to a child that already died
                    pass
            self._proc = None
        self._cleanup()

    def _cleanup(self) -> None:
        if not self._stderr.closed:
            self._stderr.close()
        self._tmp.cleanup()


def deepsparse_runner(python: str, onnx_path: str, inputs: dict[str, np.ndarray], threads: int) -> Runner:
    """A Runner whose ``run()`` returns the milliseconds DeepSparse measured (``Runner.self_timed``)."""
    process = DeepSparseProcess(python, onnx_path, inputs, threads)
    info = {k: v for k, v in process.info.items() if k != "ready"}
    info["process"] = "own interpreter, driven over a pipe; times measured inside it"
    hidden = process.hidden
    return Runner("deepsparse", f"DeepSparse {info.get('version', '?')}", process.run, lambda _out: hidden, info,
                  self_timed=True, close=process.close)


__all__ = ["DRIVER", "DeepSparseError", "DeepSparseProcess", "deepsparse_runner"]
