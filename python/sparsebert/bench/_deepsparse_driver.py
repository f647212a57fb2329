"""Time DeepSparse on an ONNX file and given inputs; print one JSON line.  Runs in DeepSparse's interpreter.

    $DEEPSPARSE_PYTHON _deepsparse_driver.py MODEL.onnx INPUTS.npz --threads T --runs R --warmup W [--outputs OUT.npz]

DeepSparse 1.8 (the last release) needs Python <= 3.11 and numpy < 2, so it lives in its own virtual
environment and this file is executed there by path: it must import nothing from sparsebert and only what
that environment has (numpy, onnx, deepsparse).  The parent (``deepsparse.py``) writes the inputs, so
DeepSparse computes on exactly the arrays the in-process engines got, and reads back its outputs to check
agreement.  DeepSparse only uses its fast path with static shapes, and it rewrites the file it compiles, so
it compiles a private copy with the inputs' shape.
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--outputs", default=None, help="write the first output of one run here (.npz)")
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
        if args.outputs:
            np.savez(args.outputs, last_hidden_state=np.asarray(first[0], dtype=np.float32))
        for _ in range(args.warmup):
            engine.run(inputs)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter_ns()
            engine.run(inputs)
            times.append((time.perf_counter_ns() - t) / 1e6)
        print(json.dumps({"runtime": "deepsparse", "version": deepsparse.__version__, "batch": int(batch),
                          "seq": int(seq), "threads": args.threads, "compile_s": compile_s, "times_ms": times,
                          "python": sys.version.split()[0], "numpy": np.__version__, "onnx": onnx.__version__}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
