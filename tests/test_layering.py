"""The package's layers (docs/ARCHITECTURE.md): serving loads only the runtime, and the import graph of the
package's modules has no cycle, no function-local import of a package module and no import against the layers.

    runtime   errors, _version, _native, tuning, tokenizer_text, format/*, engine, pipelines (and the package __init__)
    convert   convert/*: imports the runtime only
    serve     serve/*: the HTTP server, imports the runtime only (never the converter)
    faces     kernels, pruning, cli, demo, bench/*, serve_command, ray_data, __main__: import anything below
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import sparsebert

from conftest import make_model

PACKAGE = "sparsebert"
ROOT = Path(sparsebert.__path__[0])
EXTENSION = "sparsebert._core"  # compiled, no source to scan; runtime (only _native imports it)
RUNTIME = {"sparsebert", "sparsebert.errors", "sparsebert._version", "sparsebert._native", "sparsebert.tuning",
           "sparsebert.tokenizer_text", "sparsebert.text_encoding", "sparsebert.answer_spans", "sparsebert.engine",
           "sparsebert.fill_mask", "sparsebert.rerank",
           "sparsebert.pipelines", "sparsebert.extras", "sparsebert.spelling", EXTENSION}
FACES = {"sparsebert.kernels", "sparsebert.pruning", "sparsebert.cli", "sparsebert.cli_args", "sparsebert.run_command",
         "sparsebert.info_command", "sparsebert.demo", "sparsebert.serve_command", "sparsebert.__main__",
         "sparsebert.export_command", "sparsebert.demo_command", "sparsebert.ray_data"}
LAYERS = ("runtime", "convert", "serve", "face")  # an import may only go to its own layer or one before it
# Function-local imports of package modules that are the point of their function.
DEFERRED_ON_PURPOSE = {("sparsebert._native", EXTENSION)}  # _native.core(): the extension, on first use
# What serving must never load.
NOT_FOR_SERVING = ("sparsebert.convert", "sparsebert.kernels", "sparsebert.bench", "sparsebert.pruning",
                   "sparsebert.cli", "sparsebert.demo", "torch", "onnx", "onnxruntime", "transformers",
                   "safetensors")


def layer_of(module: str) -> str:
    if module in RUNTIME or module == "sparsebert.format" or module.startswith("sparsebert.format."):
        return "runtime"
    if module == "sparsebert.convert" or module.startswith("sparsebert.convert."):
        return "convert"
    if module == "sparsebert.serve" or module.startswith("sparsebert.serve."):
        return "serve"
    if module in FACES or module == "sparsebert.bench" or module.startswith("sparsebert.bench."):
        return "face"
    raise AssertionError(f"{module} is in no layer: add it to test_layering.py's RUNTIME / FACES")


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([PACKAGE, *parts])] = path
    return modules


MODULES = package_modules()
KNOWN = set(MODULES) | {EXTENSION}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the package module imported
    line: int
    local: bool  # inside a function

    def __str__(self) -> str:
        where = MODULES[self.source].relative_to(ROOT.parent)
        return f"{where}:{self.line} ({self.source} -> {self.target}{', in a function' if self.local else ''})"


def _from_base(module: str, node: ast.ImportFrom) -> str:
    """The module a `from X import ...` in ``module`` imports from, relative levels resolved."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return ".".join(filter(None, [base, node.module]))


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules an import statement imports (a `from X import y` of a submodule y names X.y)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _from_base(module, node)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in KNOWN else base for alias in node.names]
    found = []
    for name in names:
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            continue  # a third-party or standard module
        while name not in KNOWN:  # `import sparsebert.x.y` names the deepest module that exists
            name = name.rsplit(".", 1)[0]
        found.append(name)
    return found


def package_imports() -> list[Import]:
    imports = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

        def visit(node: ast.AST, local: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    imports.extend(Import(module, target, child.lineno, local) for target in _targets(module, child))
                visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(tree, False)
    return imports


IMPORTS = package_imports()


def test_the_scan_sees_the_package():
    # A scan that found nothing would pass everything below.
    assert {"sparsebert.engine", "sparsebert.convert.exporter", "sparsebert.bench.cli"} <= set(MODULES)
    edges = {(i.source, i.target) for i in IMPORTS}
    assert ("sparsebert.convert.exporter", "sparsebert.convert.pack") in edges
    assert ("sparsebert.engine", "sparsebert._native") in edges
    assert ("sparsebert.convert.hf_checkpoint", "sparsebert.convert.hf_config") in edges  # `from . import x`
    assert ("sparsebert._native", EXTENSION) in {(i.source, i.target) for i in IMPORTS if i.local}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_cycle():
    graph: dict[str, list[Import]] = {}
    for imp in IMPORTS:
        if not imp.local and imp.target != imp.source:
            graph.setdefault(imp.source, []).append(imp)
    state: dict[str, str] = {}  # "open" while on the DFS stack, "done" after
    stack: list[Import] = []

    def visit(module: str) -> list[Import] | None:
        state[module] = "open"
        for imp in graph.get(module, []):
            stack.append(imp)
            if state.get(imp.target) == "open":
                return stack[next(i for i, s in enumerate(stack) if s.source == imp.target):]
            if imp.target not in state:
                cycle = visit(imp.target)
                if cycle:
                    return cycle
            stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle:\n  " + "\n  ".join(map(str, cycle))


def test_no_function_local_import_of_a_package_module():
    local = [str(i) for i in IMPORTS if i.local and (i.source, i.target) not in DEFERRED_ON_PURPOSE]
    assert not local, ("import these at module level (defer only optional third-party dependencies):\n  "
                       + "\n  ".join(local))


def test_layers_import_downward_only():
    upward = [f"{imp}: {layer_of(imp.source)} imports {layer_of(imp.target)}" for imp in IMPORTS
              if LAYERS.index(layer_of(imp.target)) > LAYERS.index(layer_of(imp.source))]
    assert not upward, "imports against the layers:\n  " + "\n  ".join(upward)


def test_the_server_imports_no_converter():
    # The serve layer sits above convert in LAYERS only to keep one order; it must not use it.
    found = [str(i) for i in IMPORTS
             if layer_of(i.source) == "serve" and layer_of(i.target) not in ("runtime", "serve")]
    assert not found, "the server imports beyond the runtime:\n  " + "\n  ".join(found)
    assert any(layer_of(i.source) == "serve" and layer_of(i.target) == "runtime" for i in IMPORTS)


def test_no_private_names_across_modules():
    # convert's calibration once reached into pipelines._tokenizers and Pipeline._encode: modules use each
    # other's public names and attributes (private *modules*, such as _native and _version, are the package's).
    private = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and _private(node.attr)
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                private.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} uses .{node.attr}")
            if not isinstance(node, ast.ImportFrom) or not _targets(module, node):
                continue
            base = _from_base(module, node)
            private += [f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {base}.{alias.name}"
                        for alias in node.names if _private(alias.name) and f"{base}.{alias.name}" not in KNOWN]
    assert not private, "private names used across modules:\n  " + "\n  ".join(private)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# ------------------------------------------------------------------------------------------- at run time

def _python(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def served_model(tmp_path_factory, minilm_dir):
    """A small random BERT over MiniLM's vocabulary, carrying MiniLM's tokenizer (made here, with torch)."""
    model = make_model("base", seed=5, vocab_size=30522, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("layering") / "served.sbert"
    sparsebert.export(model, path, verbose=False, tokenizer=minilm_dir)
    return path


def test_serving_loads_only_the_runtime(served_model):
    script = """
        import json, sys
        import numpy as np
        import sparsebert

        engine = sparsebert.SparseEngine.load(sys.argv[1], num_threads=1)
        out = engine.run({"input_ids": np.array([[101, 7592, 102]])})
        assert out["last_hidden_state"].shape == (1, 3, 40)
        pipe = sparsebert.pipeline("feature-extraction", sys.argv[1], num_threads=1)
        assert pipe("hello world").shape == (4, 40)  # [CLS] hello world [SEP]
        print(json.dumps(sorted(sys.modules)))
    """
    loaded = json.loads(_python(script, str(served_model)))
    assert "sparsebert.engine" in loaded and "sparsebert.pipelines" in loaded  # it really served
    forbidden = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in NOT_FOR_SERVING)]
    assert not forbidden, f"serving imported {forbidden}"
    outside = [m for m in loaded if m.startswith(PACKAGE) and layer_of(m) != "runtime"]
    assert not outside, f"serving imported modules outside the runtime: {outside}"


def test_the_server_loads_only_the_runtime(served_model):
    # A real app (models loaded by its lifespan) answering a request, in a fresh interpreter.
    script = """
        import asyncio, json, sys
        import httpx
        from sparsebert.serve import create_app

        async def main():
            app = create_app({"m": sys.argv[1]})
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                    answer = await client.post("/embed", json={"inputs": "hello world"})
            assert answer.status_code == 200 and len(answer.json()[0]) == 40, answer.text

        asyncio.run(main())
        print(json.dumps(sorted(sys.modules)))
    """
    loaded = json.loads(_python(script, str(served_model)))
    assert "sparsebert.serve.app" in loaded and "fastapi" in loaded  # it really served
    forbidden = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in NOT_FOR_SERVING)]
    assert not forbidden, f"the server imported {forbidden}"


def test_import_sparsebert_imports_only_numpy_and_the_runtime():
    script = """
        import json, sys, sysconfig
        before = set(sys.modules)
        import sparsebert
        stdlib = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")}

        def standard(name):
            file = getattr(sys.modules[name], "__file__", None)  # builtin and frozen modules have none
            return file is None or (any(file.startswith(p) for p in stdlib) and "-packages" not in file)

        print(json.dumps(sorted(m for m in set(sys.modules) - before if not standard(m))))
    """
    new = json.loads(_python(script))
    assert "sparsebert" in new  # the scan sees the import at all
    others = [m for m in new if m.split(".")[0] not in (PACKAGE, "numpy")]
    assert not others, f"import sparsebert imported {others}"
    outside = [m for m in new if m.startswith(PACKAGE) and layer_of(m) != "runtime"]
    assert not outside, f"import sparsebert imported modules outside the runtime: {outside}"


def test_the_serve_and_run_commands_load_no_converter():
    # The CLI imports only the module of the command given (cli.COMMANDS): serving from the command line loads the
    # dispatcher and the runtime, never the converter, torch, ONNX or the benchmark harness.
    code = ("import sys\nfrom sparsebert.cli import main\n"
            "for command in (['serve', 'missing.sbert'], ['run', 'feature-extraction', 'missing.sbert', 'x']):\n"
            "    assert main(command) == 2, command\n"
            f"print(sorted(m for m in sys.modules if m.startswith({NOT_FOR_SERVING!r})))")
    package_root = str(Path(sparsebert.__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": package_root})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['sparsebert.cli', 'sparsebert.cli_args']", out.stdout
