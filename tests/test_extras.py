"""A missing optional dependency names the extra that installs it: one line and exit 2 from every CLI command that
needs one, a MissingDependencyError (an ImportError) from the Python API; and extras.EXTRA_OF agrees with
pyproject.toml."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sparsebert
from sparsebert.extras import EXTRA_OF, MissingDependencyError, require

from conftest import checkpoint_with_tokenizer

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
# Runs sys.argv[2:] with the comma-separated modules of sys.argv[1] made unimportable, as if not installed.
WITHOUT = textwrap.dedent("""
    import sys
    for name in sys.argv[1].split(","):
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
        sys.modules[name] = None  # `import name` now raises ModuleNotFoundError, as for a missing package
""")
CLI = WITHOUT + "from sparsebert.cli import main\nsys.exit(main(sys.argv[2:]))\n"


def without(blocked: str, script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, blocked, *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=600, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def files(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("extras")
    _, ckpt = checkpoint_with_tokenizer("base", root, minilm_dir)
    sparsebert.export(ckpt, root / "m.sbert", verbose=False)
    (root / "graph.onnx").write_bytes(b"not read: the missing package is found first")
    (root / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return {"ckpt": ckpt, "model": root / "m.sbert", "onnx": root / "graph.onnx", "out": root / "out.sbert"}


CASES = {  # command -> (module made unimportable, the extra the message must name)
    "export": ("safetensors", "export", lambda f: ["export", f["ckpt"], f["out"]]),
    "export-onnx": ("onnx", "bench", lambda f: ["export", f["onnx"], f["out"]]),
    "run": ("tokenizers", "export", lambda f: ["run", "feature-extraction", f["model"], "hello"]),
    "demo": ("torch", "export", lambda f: ["demo", "--runs", "1"]),
    "bench": ("onnx", "bench", lambda f: ["bench", "--random", "tiny", "--runs", "1", "--warmup", "0"]),
    "bench-torch": ("torch", "export", lambda f: ["bench", "--random", "tiny", "--runs", "1", "--warmup", "0"]),
    "serve": ("fastapi", "serve", lambda f: ["serve", f["model"], "--port", "0"]),
    "serve-uvicorn": ("uvicorn", "serve", lambda f: ["serve", f["model"], "--port", "0"]),
    "serve-ray": ("ray", "ray", lambda f: ["serve", f["model"], "--ray", "--port", "8000"]),
}


@pytest.mark.parametrize("case", CASES)
def test_cli_names_the_extra(files, case):
    blocked, extra, argv = CASES[case]
    proc = without(blocked, CLI, *argv(files))
    command = argv(files)[0]
    assert proc.returncode == 2, proc.stderr
    # The benchmark reports its progress on stderr too: the error is one line, the last.
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("[bench] ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"sparsebert {command}: error: ") and f"'{blocked}' package" in lines[0], lines[0]
    assert lines[0].endswith(f'pip install "sparsebert[{extra}]"'), lines[0]


API = WITHOUT + textwrap.dedent("""
    import sparsebert
    from sparsebert.extras import MissingDependencyError
    call = sys.argv[2]
    try:
        if call == "pipeline":
            sparsebert.pipeline("feature-extraction", sys.argv[3])
        elif call == "export":
            sparsebert.export(sys.argv[3], sys.argv[4], verbose=False)
        elif call == "prune_bert_":
            sparsebert.pruning.prune_bert_(object(), 0.5)
    except MissingDependencyError as exc:
        assert isinstance(exc, ImportError)
        print(exc)
    else:
        print("no error")
""")


@pytest.mark.parametrize("call, blocked", [("pipeline", "tokenizers"), ("export", "safetensors"),
                                           ("prune_bert_", "torch")])
def test_api_names_the_extra(files, call, blocked):
    proc = without(blocked, API, call, files["model"] if call == "pipeline" else files["ckpt"], files["out"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"'{blocked}' package, which is not installed: "
                                        'pip install "sparsebert[export]"'), proc.stdout


def test_a_broken_install_keeps_its_own_error(monkeypatch):
    # An installed package that fails to import (a missing shared library, say) is not "not installed".
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r'sparsebert\[bench\]'):
        require("matplotlib", "plotting")
    with pytest.raises(KeyError):
        require("json", "anything")  # only the listed optional dependencies go through require


@pytest.mark.skipif(tomllib is None, reason="tomllib is Python 3.11+")
def test_extra_of_agrees_with_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def installs(extra: str) -> set[str]:
        names = set()
        for requirement in extras[extra]:
            if requirement.startswith("sparsebert["):
                for inner in requirement[len("sparsebert["):].split("]")[0].split(","):
                    names |= installs(inner.strip())
            else:
                names.add(requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip())
        return names

    for module, (distribution, extra) in EXTRA_OF.items():
        assert distribution in installs(extra), f"{distribution} ({module}) is not in the {extra} extra"
        smaller = [e for e in extras if distribution in installs(e) and len(installs(e)) < len(installs(extra))]
        assert not smaller, f"{distribution} is also in the smaller extra(s) {smaller}"
