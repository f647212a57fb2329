"""Serving needs only numpy: `import sparsebert`, load a packed file and run it with torch, transformers and
safetensors made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from sparsebert import SparseEngine

from conftest import apply_plan_, make_model, random_inputs, save_checkpoint

BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = set(sys.argv[1].split(","))

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"import of {name!r} blocked by the test")
            return None

    sys.meta_path.insert(0, _Block())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    """
)

RUN = BLOCKER + textwrap.dedent(
    """
    import numpy as np

    # The blocker really works.
    for name in BLOCKED:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} was importable")

    import sparsebert
    from sparsebert.format.reader import read_model

    model_path, inputs_path, out_path = sys.argv[2:5]
    read_model(model_path)
    engine = sparsebert.SparseEngine.load(model_path, num_threads=1)
    inputs = dict(np.load(inputs_path))
    outputs = engine.run(inputs)
    np.savez(out_path, **outputs)

    # CLI info works too.
    import runpy
    sys.argv = ["sparsebert", "info", model_path]
    try:
        runpy.run_module("sparsebert.cli", run_name="__main__")
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code

    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("OK")
    """
)


def _run(script, *args):
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_load_and_run_without_torch(tmp_path, small_model):
    inputs = random_inputs(small_model.config.vocab_size, [11, 4, 7], seed=3)
    np.savez(tmp_path / "inputs.npz", **inputs)
    expected = SparseEngine.load(small_model.path, num_threads=1).run(inputs)

    proc = _run(RUN, "torch,transformers,safetensors", small_model.path, tmp_path / "inputs.npz",
                tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    assert "layers.0.attention.qkv" in proc.stdout  # the info table was printed
    got = dict(np.load(tmp_path / "out.npz"))
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


EXPORT = BLOCKER + textwrap.dedent(
    """
    import sparsebert

    report = sparsebert.export(sys.argv[2], sys.argv[3], verbose=False)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(json.dumps({row.name: row.layout for row in report.rows}))
    """
).replace("import sparsebert", "import json\nimport sparsebert", 1)


def test_export_safetensors_dir_without_torch(tmp_path):
    # ARCHITECTURE.md: the exporter needs only numpy (+ safetensors' numpy reader) for checkpoint dirs.
    model = make_model("question_answering", seed=8, num_hidden_layers=3)
    expected = apply_plan_(model, "mixed")
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "m.sbert"
    proc = _run(EXPORT, "torch,transformers", ckpt, out)
    assert proc.returncode == 0, proc.stderr
    layouts = json.loads(proc.stdout.strip().splitlines()[-1])
    for i, layout in expected.items():
        assert layouts[f"layers.{i}.ffn.up"] == layout
    # Same file as exporting with torch available.
    import sparsebert

    sparsebert.export(ckpt, tmp_path / "with_torch.sbert", verbose=False)
    inp = random_inputs(model.config.vocab_size, [6, 2], seed=4)
    a = SparseEngine.load(out).run(inp)
    b = SparseEngine.load(tmp_path / "with_torch.sbert").run(inp)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_import_sparsebert_does_not_import_torch():
    # `import sparsebert` alone must stay cheap even where torch is installed.
    script = (
        "import sys, sparsebert, sparsebert.format, sparsebert.convert, sparsebert.convert.packing\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'safetensors', 'tokenizers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = _run(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at `import sparsebert`: {proc.stdout.strip()}"
