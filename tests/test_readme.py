"""Every ```python block of README.md runs, in order and in one namespace (as a reader would paste them), in a
temporary directory holding the files the blocks name. A block that raises fails the test, naming its line and
first line.

To cover a new block that reads a file: add a builder for that file name to FIXTURES (built only when some block
names the file).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")

import sparsebert  # noqa: E402
from sparsebert.pruning import prune_bert_  # noqa: E402

from conftest import checkpoint_with_tokenizer  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the block's first line of code, code) of every python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def _checkpoint(kind: str, **config) -> Callable[[Path, Path, Path], None]:
    """A builder of a random BERT checkpoint directory of ``kind`` (MiniLM's tokenizer, 90% pruned) at ``target``."""
    def build(target: Path, work: Path, minilm_dir: Path) -> None:
        model, ckpt = checkpoint_with_tokenizer(kind, work, minilm_dir, **config)
        prune_bert_(model, 0.9)
        model.save_pretrained(ckpt, safe_serialization=True)
        shutil.move(str(ckpt), target)
    return build


def _packed(kind: str, head: str | None = None, **config) -> Callable[[Path, Path, Path], None]:
    def build(target: Path, work: Path, minilm_dir: Path) -> None:
        _checkpoint(kind, **config)(work / f"{target.stem}-checkpoint", work, minilm_dir)
        sparsebert.export(work / f"{target.stem}-checkpoint", target, head=head, verbose=False)
    return build


def _minilm(target: Path, work: Path, minilm_dir: Path) -> None:
    sparsebert.export(minilm_dir, target, verbose=False)  # a sentence-transformers directory: pooling recorded


# A file name a README block reads -> its builder(target, scratch directory, MiniLM's directory).
FIXTURES: dict[str, Callable[[Path, Path, Path], None]] = {
    "my-pruned-bert/": _checkpoint("sequence_classification"),
    "model.sbert": _packed("sequence_classification"),
    "ner.sbert": _packed("token_classification"),
    "squad.sbert": _packed("question_answering", max_position_embeddings=512),
    "minilm.sbert": _minilm,
    "bert-base.sbert": _packed("masked_lm", head="masked_lm"),
    "reranker.sbert": _packed("sequence_classification", num_labels=1),
}


def run_blocks(blocks: list[tuple[int, str]], where: str = "README.md") -> None:
    """Runs the blocks in order in one namespace; AssertionError naming the block that raised."""
    namespace: dict = {"__name__": "__readme__"}
    for line, code in blocks:
        first = next((s.strip() for s in code.splitlines() if s.strip() and not s.lstrip().startswith("#")), "")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # export() prints its report
                exec(compile(code, f"{where}:{line}", "exec"), namespace)  # noqa: S102 (running the README is the point)
        except Exception as exc:
            raise AssertionError(f"{where} block at line {line} ({first!r}) raised {type(exc).__name__}: {exc}") \
                from exc


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch, minilm_dir):
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "the README's python blocks were not found"
    work = tmp_path / "scratch"
    work.mkdir()
    here = tmp_path / "readme"
    here.mkdir()
    code = "\n".join(block for _, block in blocks)
    for name, build in FIXTURES.items():
        if name in code:
            build(here / name.rstrip("/"), work, minilm_dir)
    monkeypatch.chdir(here)
    run_blocks(blocks)


def test_a_block_that_raises_fails_naming_it():
    blocks = readme_blocks("text\n```python\nx = 1\n```\n\n```python\n# comment\ny = x + undefined\n```\n")
    assert blocks == [(3, "x = 1\n"), (7, "# comment\ny = x + undefined\n")]
    with pytest.raises(AssertionError, match=r"block at line 7 \('y = x \+ undefined'\) raised NameError"):
        run_blocks(blocks)
