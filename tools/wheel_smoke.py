"""Checks that an installed sparsebert (e.g. a wheel in a clean virtual environment) runs packed models exactly as
a reference build does, with no torch on the checking side.

    python tools/wheel_smoke.py make DIR    # an environment with sparsebert[export]: writes packed models of a tiny
                                            # random pruned BERT (fp32 and int8), inputs, and their outputs on
                                            # every ISA this CPU has
    python tools/wheel_smoke.py check DIR   # any environment with sparsebert and numpy: imports every module of
                                            # the package, loads the models, runs the same inputs on the same ISAs
                                            # and fails unless every output is equal

Outputs are compared bit for bit: the same C++ on the same ISA at the same thread count gives the same bits (the
README's reproducibility promise), so any difference means the installed build is not the reference's.
Used by .ci/wheel and tools/build_wheels.sh.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import tempfile

import numpy as np
import sparsebert
from sparsebert.pruning import prune_bert_

MODELS = {"fp32": {}, "int8": {"quantize": "int8"}}
THREADS = 2  # fixed: results are bitwise reproducible at a given thread count


def make(directory: str) -> None:
    import torch  # only the reference side has torch: the checked environment has numpy and sparsebert alone
    import transformers

    config = transformers.BertConfig(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=96, max_position_embeddings=40, num_labels=3)
    torch.manual_seed(0)
    model = prune_bert_(transformers.BertForSequenceClassification(config).eval(), 0.9, block=4)
    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(0, config.vocab_size, (3, 17)),
              "attention_mask": (np.arange(17) < np.array([[17], [9], [1]])).astype(np.int64)}
    os.makedirs(directory, exist_ok=True)
    np.savez(os.path.join(directory, "inputs.npz"), **inputs)
    with tempfile.TemporaryDirectory() as checkpoint:
        model.save_pretrained(checkpoint)
        for name, options in MODELS.items():
            sparsebert.export(checkpoint, os.path.join(directory, f"{name}.sbert"), **options)
    isas = sparsebert.available_isas()
    for name in MODELS:
        for isa in isas:
            np.savez(os.path.join(directory, f"{name}.{isa}.npz"), **_run(directory, name, isa, inputs))
    with open(os.path.join(directory, "isas.json"), "w") as f:
        json.dump(isas, f)
    print(f"wheel_smoke: reference outputs of {sorted(MODELS)} on {isas} in {directory}")


def check(directory: str) -> None:
    # Every module must import with numpy alone (torch and the like are imported only where used), on every Python
    # the wheels are built for; __main__ would run the command line.
    for module in pkgutil.walk_packages(sparsebert.__path__, "sparsebert."):
        if module.name != "sparsebert.__main__":
            importlib.import_module(module.name)
    with open(os.path.join(directory, "isas.json")) as f:
        isas = json.load(f)
    if sparsebert.available_isas() != isas:
        sys.exit(f"wheel_smoke: this CPU runs {sparsebert.available_isas()}, the reference ran {isas}")
    inputs = dict(np.load(os.path.join(directory, "inputs.npz")))
    for name in MODELS:
        for isa in isas:
            expected = np.load(os.path.join(directory, f"{name}.{isa}.npz"))
            actual = _run(directory, name, isa, inputs)
            if sorted(actual) != sorted(expected.files):
                sys.exit(f"wheel_smoke: {name} on {isa}: outputs {sorted(actual)}, expected {expected.files}")
            for key, value in actual.items():
                if not np.array_equal(value, expected[key]):
                    diff = np.max(np.abs(value - expected[key]))
                    sys.exit(f"wheel_smoke: {name} on {isa}: {key} differs from the reference (max {diff:.3g})")
    print(f"wheel_smoke: sparsebert {sparsebert.__version__} from {os.path.dirname(sparsebert.__file__)} (Python "
          f"{sys.version.split()[0]}) gives the reference's outputs of {sorted(MODELS)} on {isas}")


def _run(directory: str, name: str, isa: str, inputs: dict) -> dict:
    engine = sparsebert.SparseEngine.load(os.path.join(directory, f"{name}.sbert"), num_threads=THREADS, isa=isa)
    return engine.run(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["make", "check"])
    parser.add_argument("directory")
    args = parser.parse_args()
    (make if args.mode == "make" else check)(args.directory)


if __name__ == "__main__":
    main()
