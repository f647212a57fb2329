"""Serve DeepSparse inferences to the harness over a pipe.  Runs in DeepSparse's own interpreter.

    $DEEPSPARSE_PYTHON -I _deepsparse_driver.py MODEL.onnx INPUTS.npz OUTPUTS.npz --threads T

DeepSparse 1.8 (the last release) needs Python <= 3.11 and numpy < 2, so it lives in its own virtual
environment and this file is executed there by path: it must import nothing from sparsebert and only what
that environment has (numpy, onnx, deepsparse).

Protocol, one JSON object per line: after compiling, the driver writes its last_hidden_state for the inputs to
OUTPUTS.npz and prints ``{"ready": ...}``; then each ``run`` line on stdin runs the model once and answers
``{"ms": ...}`` timed here (so the pipe's latency is not counted); ``quit`` or end of input ends it.  The
parent decides when each run happens, which is what lets it interleave DeepSparse with the in-process
engines.  DeepSparse only uses its fast path with static shapes, and it rewrites the file it compiles, so it
compiles a private copy with the inputs' shape.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

# No usage reporting from a benchmark run (and no network access is expected).
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()

    import numpy as np
    import onnx

    import deepsparse

    arrays = np.load(args.inputs)
    scratch = tempfile.mkdtemp(prefix="sparsebert-deepsparse-")
    try:
        path = os.path.join(scratch, "model.onnx")
        shutil.copy(args.model, path)
        names = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
        inputs = [np.ascontiguousarray(arrays[name], dtype=np.int64) for name in names]
        batch, seq = inputs[0].shape
        t0 = time.perf_counter()
        engine = deepsparse.compile_model(path, batch_size=batch, num_cores=args.threads,
                                          input_shapes=[[batch, seq]] * len(names))
        compile_s = time.perf_counter() - t0
        first = engine.run(inputs)
        np.savez(args.outputs, last_hidden_state=np.asarray(first[0], dtype=np.float32))
        say({"ready": True, "version": deepsparse.__version__, "compile_s": compile_s, "threads": args.threads,
             "python": sys.version.split()[0], "numpy": np.__version__, "onnx": onnx.__version__})
        for line in sys.stdin:
            command = line.strip()
            if command == "run":
                t = time.perf_counter_ns()
                engine.run(inputs)
                say({"ms": (time.perf_counter_ns() - t) / 1e6})
            elif command == "quit":
                break
            else:
                say({"error": f"unknown command {command!r}"})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
